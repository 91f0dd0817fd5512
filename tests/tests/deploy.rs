//! deploy/ validated offline: every kustomize overlay renders with kubectl and
//! passes `kubernetes-validate --strict` for the built-in kinds.

use std::{path::PathBuf, process::Command};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn render(overlay: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", &repo().join("deploy").join(overlay).display().to_string()])
        .output()
        .expect("kubectl is installed (see PEERS.md)");
    assert!(out.status.success(), "kubectl kustomize {overlay}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn validate(overlay: &str, yaml: &str) {
    let path =
        std::env::temp_dir().join(format!("respawn-deploy-{}-{}.yaml", overlay.replace('/', "-"), std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.32.0", &path.display().to_string()])
        .output()
        .expect("kubernetes-validate is installed (tests/requirements.txt)");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{overlay} fails validation:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn overlays_render_and_validate() {
    for overlay in ["base", "overlays/dev", "overlays/production"] {
        let yaml = render(overlay);
        validate(overlay, &yaml);
        for kind in ["CustomResourceDefinition", "ClusterRole", "Deployment", "ServiceAccount"] {
            assert!(yaml.contains(&format!("kind: {kind}")), "{overlay} lacks a {kind}");
        }
        assert!(yaml.contains("type: LoadBalancer") && yaml.contains("port: 25565"), "{overlay}: players' Service");
    }
    let base = render("base");
    assert_eq!(base.matches("replicas: 2").count(), 2, "proxy and controller run two replicas");
    let dev = render("overlays/dev");
    assert!(!dev.contains("replicas: 2"), "dev runs one of each");
}

#[test]
fn a_broken_manifest_is_caught() {
    // The check itself must be able to fail.
    let yaml = render("base").replacen(
        "serviceAccountName: respawn-proxy",
        "serviceAccountName: respawn-proxy\n      notAField: true",
        1,
    );
    let path = std::env::temp_dir().join(format!("respawn-deploy-broken-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.32.0", &path.display().to_string()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success(), "kubernetes-validate accepted an unknown field");
}

#[test]
fn least_privilege_rbac() {
    let base = render("base");
    assert!(!base.contains("\"*\"") && !base.contains("- '*'"), "no wildcard verbs or resources");
    assert!(base.contains("minecraftservers/status"), "the controller writes status through the subresource");
    assert!(base.contains("statefulsets/scale"));
}
