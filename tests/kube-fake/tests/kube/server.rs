//! The server's lifecycle: stopping ends open watches; the binary serves on the address
//! it is given and prints its URL.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, WatchParams};

use crate::common::{STEP, server};

#[tokio::test]
async fn stop_ends_open_watches_and_returns() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let mut stream = cms.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    tokio::time::timeout(STEP, server.stop()).await.expect("stop returns");
    let end = tokio::time::timeout(STEP, async {
        while let Some(item) = stream.next().await {
            if item.is_err() {
                break;
            }
        }
    });
    end.await.expect("the watch ended with the server");
}

/// Kills the child even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_prints_its_url_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_respawn-kube-fake"))
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let url = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line.trim().to_string())
    });
    let url = tokio::time::timeout(STEP, url).await.unwrap().unwrap().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let listed = namespaces.list(&ListParams::default()).await.unwrap();
    assert!(
        listed
            .items
            .iter()
            .any(|ns| ns.metadata.name.as_deref() == Some("default"))
    );
}
