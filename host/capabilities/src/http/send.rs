//! The host side of `wasi:http/outgoing-handler`: every request a plugin sends passes
//! [`GrantHooks::send_request`], which checks the origin against `grants.http`, bounds the
//! whole exchange by the per-request deadline and the response body by the size cap.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::config::HttpLimits;
use super::origin::{origin_allowed, origin_of};

/// What the hooks need to know about the plugin whose requests they check.
pub struct GrantHooks {
    pub(super) plugin: Arc<str>,
    pub(super) grants: Arc<[String]>,
    pub(super) limits: HttpLimits,
}

/// The denial text: names the plugin, the origin and where to grant it.
pub fn denial(plugin: &str, uri: &http::Uri) -> String {
    let origin = origin_of(uri).unwrap_or_else(|| uri.to_string());
    format!(
        "plugin `{plugin}` is not granted HTTP requests to {origin} ({uri}); add \"{origin}\" \
         to grants.http in {plugin}.toml"
    )
}

type Sent = Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
)>;

type Result<T, E = Error> = std::result::Result<T, E>;

/// The guest's timeouts, each at most what is left of the deadline.
fn clamp(options: Option<RequestOptions>, deadline: Duration) -> RequestOptions {
    let o = options.unwrap_or_default();
    let cap = |t: Option<Duration>| Some(t.map_or(deadline, |t| t.min(deadline)));
    RequestOptions {
        connect_timeout: cap(o.connect_timeout),
        first_byte_timeout: cap(o.first_byte_timeout),
        between_bytes_timeout: cap(o.between_bytes_timeout),
    }
}

impl WasiHttpHooks for GrantHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        if !origin_allowed(&self.grants, request.uri()) {
            let text = denial(&self.plugin, request.uri());
            tracing::warn!(plugin = &*self.plugin, "{text}");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let limits = self.limits;
        let plugin = self.plugin.clone();
        Box::new(async move {
            let deadline = tokio::time::Instant::now() + limits.timeout;
            let options = clamp(options, limits.timeout);
            let sent = tokio::time::timeout_at(
                deadline,
                wasmtime_wasi_http::default_send_request(request, Some(options)),
            )
            .await;
            let (response, io) = match sent {
                Ok(r) => r?,
                Err(_) => {
                    tracing::debug!(plugin = &*plugin, "HTTP request ran past its deadline");
                    return Err(Error::HttpResponseTimeout);
                }
            };
            if let Some(len) = content_length(response.headers())
                && len > limits.max_response_bytes
            {
                return Err(Error::HttpResponseBodySize(Some(len)));
            }
            let response = response.map(|body| {
                Capped::new(body.boxed_unsync(), limits.max_response_bytes, deadline).boxed_unsync()
            });
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A response body cut off at `max` bytes (`HttpResponseBodySize`) and at the request's
/// deadline (`HttpResponseTimeout`).
pub(super) struct Capped {
    inner: WasiBody,
    max: u64,
    seen: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Capped {
    pub(super) fn new(inner: WasiBody, max: u64, deadline: tokio::time::Instant) -> Capped {
        Capped {
            inner,
            max,
            seen: 0,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done: false,
        }
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.max {
                        this.done = true;
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.max)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn full(bytes: &'static [u8]) -> WasiBody {
        Full::new(Bytes::from_static(bytes))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    fn later() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn a_body_within_the_cap_passes_whole() {
        let body = Capped::new(full(b"hello"), 5, later());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_fails_with_its_size() {
        let body = Capped::new(full(b"hello!"), 5, later());
        let err = body.collect().await.expect_err("over the cap");
        assert!(matches!(err, Error::HttpResponseBodySize(Some(5))), "{err}");
    }

    /// A body that never yields a frame.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_at_the_deadline() {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let err = Capped::new(Stalled.boxed_unsync(), 1 << 20, deadline)
            .collect()
            .await
            .expect_err("deadline");
        assert!(matches!(err, Error::HttpResponseTimeout), "{err}");
    }

    #[test]
    fn guest_timeouts_are_capped_by_the_deadline() {
        let d = Duration::from_secs(10);
        let o = clamp(
            Some(RequestOptions {
                connect_timeout: Some(Duration::from_secs(1)),
                first_byte_timeout: Some(Duration::from_secs(60)),
                between_bytes_timeout: None,
            }),
            d,
        );
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(o.first_byte_timeout, Some(d));
        assert_eq!(o.between_bytes_timeout, Some(d));
    }

    #[tokio::test]
    async fn an_ungranted_origin_is_denied_before_any_connection() {
        let mut hooks = GrantHooks {
            plugin: "webhook".into(),
            grants: vec!["http://127.0.0.1:9".to_string()].into(),
            limits: HttpLimits::default(),
        };
        let request = http::Request::post("http://127.0.0.1:10/hook")
            .body(full(b"{}"))
            .unwrap();
        let sent = Pin::from(hooks.send_request(request, None, Box::new(async { Ok(()) }))).await;
        assert!(matches!(sent, Err(Error::HttpRequestDenied)));
        let text = denial("webhook", &"http://127.0.0.1:10/hook".parse().unwrap());
        assert!(
            text.contains("grants.http")
                && text.contains("\"http://127.0.0.1:10\"")
                && text.contains("webhook.toml"),
            "{text}"
        );
    }
}
