//! `respawn demo-server`: a stand-in backend for a fresh machine with no Java
//! and no server jar. It answers status (any version) and, on login, sends a
//! Disconnect that explains where a real server goes. `stop` on stdin (what
//! the local runtime sends) or a signal shuts it down.

use std::net::SocketAddr;

use anyhow::Result;
use respawn_codec::{
    decode_handshake, decode_login_start,
    handshake::NextState,
    login::encode_login_disconnect,
    status::{StatusC2s, decode_status_c2s, encode_pong, encode_status_response},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    time::{Duration, timeout},
};
use tokio_util::sync::CancellationToken;

pub async fn run(listen: SocketAddr, motd: String, shutdown: CancellationToken) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(%listen, "demo server listening");
    // The local runtime stops servers with `stop` on stdin.
    let stdin_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "stop" {
                break;
            }
        }
        stdin_stop.cancel();
    });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let motd = motd.clone();
                    tokio::spawn(async move {
                        let _ = timeout(Duration::from_secs(10), serve(stream, &motd)).await;
                    });
                }
            }
        }
    }
    tracing::info!("demo server stopped");
    Ok(())
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    if buf.len() > 64 * 1024 {
        return None;
    }
    let mut chunk = [0u8; 2048];
    let n = s.read(&mut chunk).await.ok()?;
    (n > 0).then(|| buf.extend_from_slice(&chunk[..n]))
}

async fn serve(mut s: TcpStream, motd: &str) -> Option<()> {
    let mut buf = Vec::new();
    let (hs, mut at) = loop {
        match decode_handshake(&buf) {
            Ok(Some(done)) => break done,
            Ok(None) => read_more(&mut s, &mut buf).await?,
            Err(_) => return None,
        }
    };
    match hs.next_state {
        NextState::Status => loop {
            match decode_status_c2s(&buf[at..]) {
                Ok(Some((StatusC2s::Request, n))) => {
                    at += n;
                    let json = serde_json::json!({
                        "version": { "name": "Respawn demo", "protocol": hs.protocol },
                        "players": { "max": 20, "online": 0 },
                        "description": { "text": motd },
                    });
                    s.write_all(&encode_status_response(&json.to_string())).await.ok()?;
                }
                Ok(Some((StatusC2s::Ping(p), _))) => {
                    s.write_all(&encode_pong(p)).await.ok()?;
                    return Some(());
                }
                Ok(None) => read_more(&mut s, &mut buf).await?,
                Err(_) => return None,
            }
        },
        NextState::Login | NextState::Transfer => loop {
            match decode_login_start(&buf[at..], hs.protocol) {
                Ok(Some((login, _))) => {
                    let text = format!(
                        "Hello {}! You reached \"{motd}\" through Respawn. This demo server only says hello: \
                         point the server's command at a real server jar to play.",
                        login.name
                    );
                    s.write_all(&encode_login_disconnect(&text)).await.ok()?;
                    return Some(());
                }
                Ok(None) => read_more(&mut s, &mut buf).await?,
                Err(_) => return None,
            }
        },
    }
}
