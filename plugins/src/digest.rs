//! Expected checksums of a plugin jar and the hashing done while it streams in.

use std::fmt;

use sha2::{Digest, Sha256, Sha512};

/// A hash algorithm a plugin spec may pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        })
    }
}

impl Algorithm {
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// The digests a jar must have: at least one, each lower-case hex of the right length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Option<String>,
    pub sha512: Option<String>,
}

/// A digest in a spec that is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestSpecError {
    #[error("neither sha256 nor sha512 is given")]
    Missing,
    #[error("{algorithm} {value:?} is not {len} hex characters", len = algorithm.hex_len())]
    Malformed { algorithm: Algorithm, value: String },
}

impl Expected {
    /// Validates and normalises (lower-cases) the digests of a spec.
    pub fn new(sha256: Option<&str>, sha512: Option<&str>) -> Result<Self, DigestSpecError> {
        let sha256 = sha256.map(|v| normalise(Algorithm::Sha256, v)).transpose()?;
        let sha512 = sha512.map(|v| normalise(Algorithm::Sha512, v)).transpose()?;
        if sha256.is_none() && sha512.is_none() {
            return Err(DigestSpecError::Missing);
        }
        Ok(Self { sha256, sha512 })
    }

    /// The first digest of `actual` that differs from what is expected, if any.
    pub fn mismatch(&self, actual: &Actual) -> Option<Mismatch> {
        let pairs =
            [(Algorithm::Sha256, &self.sha256, &actual.sha256), (Algorithm::Sha512, &self.sha512, &actual.sha512)];
        pairs.into_iter().find_map(|(algorithm, want, got)| {
            want.as_ref().filter(|want| *want != got).map(|want| Mismatch {
                algorithm,
                expected: want.clone(),
                actual: got.clone(),
            })
        })
    }
}

fn normalise(algorithm: Algorithm, value: &str) -> Result<String, DigestSpecError> {
    let value = value.trim();
    if value.len() == algorithm.hex_len() && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(DigestSpecError::Malformed { algorithm, value: value.to_owned() })
    }
}

/// A checksum that did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub algorithm: Algorithm,
    pub expected: String,
    pub actual: String,
}

/// Both digests of some bytes, lower-case hex. Both are always computed: the manifest
/// records them so a later spec pinning either one can be compared without a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actual {
    pub sha256: String,
    pub sha512: String,
}

/// Hashes bytes as they arrive.
#[derive(Default, Clone)]
pub struct Hasher {
    sha256: Sha256,
    sha512: Sha512,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.sha512.update(bytes);
    }

    pub fn finish(self) -> Actual {
        Actual { sha256: hex::encode(self.sha256.finalize()), sha512: hex::encode(self.sha512.finalize()) }
    }
}

/// Digests of a file on disk, or `None` when it does not exist.
pub async fn of_file(path: &std::path::Path) -> std::io::Result<Option<Actual>> {
    use tokio::io::AsyncReadExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(Some(hasher.finish()));
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_known_vector() {
        let actual = Hasher::default().finish();
        assert_eq!(actual.sha256, EMPTY_SHA256);
        assert!(actual.sha512.starts_with("cf83e1357eefb8bd"));
    }

    #[test]
    fn validates_and_lowercases() {
        let upper = EMPTY_SHA256.to_ascii_uppercase();
        let e = Expected::new(Some(&upper), None).unwrap();
        assert_eq!(e.sha256.as_deref(), Some(EMPTY_SHA256));
        assert_eq!(Expected::new(None, None), Err(DigestSpecError::Missing));
        assert!(matches!(Expected::new(Some("abc"), None), Err(DigestSpecError::Malformed { .. })));
        assert!(matches!(
            Expected::new(None, Some(EMPTY_SHA256)),
            Err(DigestSpecError::Malformed { algorithm: Algorithm::Sha512, .. })
        ));
    }

    #[test]
    fn mismatch_reports_expected_and_actual() {
        let actual = Hasher::default().finish();
        let good = Expected::new(Some(EMPTY_SHA256), Some(&actual.sha512)).unwrap();
        assert_eq!(good.mismatch(&actual), None);
        let bad = Expected::new(Some(&"0".repeat(64)), None).unwrap();
        let m = bad.mismatch(&actual).unwrap();
        assert_eq!(m.algorithm, Algorithm::Sha256);
        assert_eq!(m.expected, "0".repeat(64));
        assert_eq!(m.actual, EMPTY_SHA256);
    }
}
