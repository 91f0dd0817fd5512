//! The house's one-way dependencies (ARCHITECTURE.md, "Invariants"), read
//! from `cargo metadata`: a forbidden edge anywhere in the workspace fails
//! here, naming the path that brings it in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::Value;

/// Crates nothing in the product may reach through normal dependencies:
/// (crate, what it must never pull in, why).
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    ("respawn-codec", &["tokio", "respawn-contract", "respawn-proxy"], "the codec is sans-IO and at the bottom"),
    (
        "respawn-contract",
        &["respawn-codec", "respawn-proxy", "respawn-local", "respawn-k8s", "respawn-api", "respawn-plugins", "kube"],
        "the contracts are at the bottom",
    ),
    (
        "respawn-proxy",
        &["respawn-local", "respawn-rcon", "respawn-plugins", "respawn-k8s", "respawn-api", "reqwest", "kube", "sqlx"],
        "the data plane links no runtime, no RCON, no HTTP client",
    ),
    (
        "respawn-k8s",
        &["respawn-proxy", "respawn-api", "respawn-local", "respawn-plugins"],
        "the Kubernetes controller stands beside the proxy and the API",
    ),
    ("respawn-local", &["respawn-proxy", "respawn-api", "respawn-k8s", "kube"], "the local runtime stands beside them"),
    ("respawn-api", &["respawn-proxy", "respawn-local", "respawn-k8s", "kube"], "the API stands beside them"),
    ("respawn-plugins", &["respawn-proxy", "respawn-local", "respawn-k8s", "respawn-api"], "plugins stand beside them"),
];

/// Product crates: none may depend on the fake API server, not even for its tests.
const PRODUCT: &[&str] = &[
    "respawn",
    "respawn-codec",
    "respawn-contract",
    "respawn-proxy",
    "respawn-local",
    "respawn-rcon",
    "respawn-k8s",
    "respawn-api",
    "respawn-plugins",
];

/// name → (normal dependencies, every dependency of any kind), from the resolve graph.
type Graph = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

fn graph(metadata: &Value) -> Graph {
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph = Graph::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let name = names[node["id"].as_str().unwrap()].to_owned();
        let (normal, all) = graph.entry(name).or_default();
        for dep in node["deps"].as_array().unwrap() {
            let dep_name = names[dep["pkg"].as_str().unwrap()].to_owned();
            let kinds = dep["dep_kinds"].as_array().unwrap();
            if kinds.iter().any(|k| k["kind"].is_null()) {
                normal.insert(dep_name.clone());
            }
            all.insert(dep_name);
        }
    }
    graph
}

/// The path from `from` to `to` through normal dependencies, if any.
fn path(graph: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([from.to_owned()]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![at.clone()];
            let mut cur = at;
            while let Some(prev) = came_from.get(&cur) {
                path.push(prev.clone());
                cur = prev.clone();
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(&at).map(|(normal, _)| normal.iter()).into_iter().flatten() {
            if next != from && !came_from.contains_key(next) {
                came_from.insert(next.clone(), at.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

/// Every broken rule, as a sentence.
fn violations(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (krate, forbidden, why) in FORBIDDEN {
        assert!(graph.contains_key(*krate), "{krate} is not in the workspace any more: update this test");
        for target in *forbidden {
            if let Some(p) = path(graph, krate, target) {
                out.push(format!("{krate} must not depend on {target} ({why}): {}", p.join(" → ")));
            }
        }
    }
    for krate in PRODUCT {
        if graph.get(*krate).is_some_and(|(_, all)| all.contains("respawn-kube-fake")) {
            out.push(format!("{krate} depends on respawn-kube-fake: test infrastructure stays under tests/"));
        }
    }
    out
}

/// The workspace's dependency graph as it builds on this machine (target
/// dependencies of other platforms — wasm's tokio under bevy — left out).
fn metadata() -> Value {
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--filter-platform", &host])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn dependencies_point_one_way() {
    let graph = graph(&metadata());
    let broken = violations(&graph);
    assert!(broken.is_empty(), "forbidden dependencies:\n{}", broken.join("\n"));
}

/// The checker itself sees a forbidden edge, direct or transitive.
#[test]
fn a_forbidden_edge_is_caught() {
    let mut graph = graph(&metadata());
    // The proxy picks up the local runtime (and with it RCON and reqwest).
    graph.get_mut("respawn-proxy").unwrap().0.insert("respawn-local".into());
    // The k8s crate's tests start using the fake.
    graph.get_mut("respawn-k8s").unwrap().1.insert("respawn-kube-fake".into());
    let broken = violations(&graph);
    for needle in [
        "respawn-proxy must not depend on respawn-local",
        "respawn-proxy must not depend on respawn-rcon",
        "respawn-proxy → respawn-local → respawn-plugins → reqwest",
        "respawn-k8s depends on respawn-kube-fake",
    ] {
        assert!(broken.iter().any(|b| b.contains(needle)), "missed `{needle}` in {broken:#?}");
    }
}
