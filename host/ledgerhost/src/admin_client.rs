//! The client side of a running host's admin port (`ledgerhost status`, the tests): plain
//! HTTP/1.1 on loopback through `reqwest`.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::status::HostStatus;

/// `GET path` on the admin port `addr` (`host:port`); returns the HTTP status and the body.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        // The admin port is local: an HTTP proxy from the environment must not answer for it.
        .no_proxy()
        .build()
        .context("cannot build an HTTP client")?;
    let answer = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the admin port at {addr}: is the host running (`ledgerhost run`), \
                 and is `admin.listen` {addr}?"
            )
        })?;
    let code = answer.status().as_u16();
    let body = answer
        .text()
        .await
        .with_context(|| format!("reading the answer of {addr}{path}"))?;
    Ok((code, body))
}

/// [`get`] for synchronous callers (tests polling a host): runs on a thread of its own, so
/// it may be called from inside an async runtime too.
pub fn get_blocking(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let (addr, path) = (addr.to_string(), path.to_string());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime for the admin client")?
            .block_on(get(&addr, &path))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the admin client thread panicked"))?
}

/// The host's [`HostStatus`] from `GET /status`.
pub async fn status(addr: &str) -> anyhow::Result<HostStatus> {
    let (code, body) = get(addr, "/status").await?;
    if code != 200 {
        bail!("the admin port answered {code}: {body}");
    }
    serde_json::from_str(&body).context("the admin port's /status is not a ledgerhost status")
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A multibyte character split across two chunks comes back whole.
    #[tokio::test]
    async fn a_chunked_body_with_a_character_across_chunks_reads_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await.unwrap();
            let body = "día → ok".as_bytes();
            // Cut inside `í` (2 bytes) and inside `→` (3 bytes).
            let cuts = [0, 2, 7, body.len()];
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for w in cuts.windows(2) {
                let chunk = &body[w[0]..w[1]];
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            sock.write_all(&out).await.unwrap();
            sock.shutdown().await.unwrap();
        });
        let (code, body) = super::get(&addr, "/status").await.unwrap();
        assert_eq!(code, 200);
        assert_eq!(body, "día → ok");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_port_names_the_fix() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = format!("{:#}", super::get(&addr, "/status").await.unwrap_err());
        assert!(err.contains("is the host running"), "{err}");
    }
}
