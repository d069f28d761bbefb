//! Object storage in Google Cloud Storage, through its JSON API over HTTP.
//!
//! The JSON API is used directly (not object_store or google-cloud-storage) because it is the
//! one API both Cloud Storage and the fake-gcs-server emulator implement fully: uploads are
//! single `uploadType=media` requests, which Cloud Storage applies atomically (readers see the
//! old or the new object whole).
//!
//! Endpoint and credentials follow [`ledgerhost_google`]'s rule for [`STORAGE`]:
//! [`GcsConfig::endpoint`], else `STORAGE_EMULATOR_HOST`, else
//! `https://storage.googleapis.com`; anonymous against an emulator, Google application
//! default credentials otherwise ([`GcsConfig::auth`]).

use std::time::Duration;

use async_trait::async_trait;
use ledgerhost_core::capabilities::BlobStore;
use ledgerhost_core::{PortError, PortResult};
use ledgerhost_google::{Auth, AuthMode, Endpoint, STORAGE};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tracing::debug;

use super::name::checked_name;

const BACKEND: &str = "gcs blobstore";

/// Everything but RFC 3986 unreserved characters is escaped in a path segment, `/` included:
/// an object name is one segment of the JSON API path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Settings of [`GcsBlobStore`].
#[derive(Debug, Clone)]
pub struct GcsConfig {
    /// Base URL, e.g. `http://127.0.0.1:4443`; `None` reads `STORAGE_EMULATOR_HOST`, then
    /// uses Google's endpoint.
    pub endpoint: Option<String>,
    /// Project that owns buckets created by [`BlobStore::ensure_bucket`] (required by Google,
    /// ignored by emulators).
    pub project: Option<String>,
    /// How requests are authenticated.
    pub auth: AuthMode,
    /// Timeout of one request (uploads of large objects included).
    pub timeout: Duration,
    /// Names asked for per listing page (Cloud Storage allows up to 1000).
    pub list_page_size: u32,
}

impl Default for GcsConfig {
    fn default() -> Self {
        GcsConfig {
            endpoint: None,
            project: None,
            auth: AuthMode::Auto,
            timeout: Duration::from_secs(120),
            list_page_size: 1000,
        }
    }
}

/// A Cloud Storage client; cheap to clone.
#[derive(Clone)]
pub struct GcsBlobStore {
    http: reqwest::Client,
    endpoint: Endpoint,
    project: Option<String>,
    auth: Auth,
    page_size: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectList {
    #[serde(default)]
    items: Vec<ObjectItem>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ObjectItem {
    name: String,
}

/// Maps an HTTP answer that is not a success to a port error about `what`.
async fn status_error(what: &str, resp: Response) -> PortError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    match status {
        StatusCode::BAD_REQUEST => PortError::Invalid {
            backend: BACKEND,
            message: format!("{what}: rejected as invalid ({status}): {body}"),
        },
        StatusCode::NOT_FOUND => PortError::NotFound {
            backend: BACKEND,
            what: format!("{what} (create the bucket first: ensure-bucket)"),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PortError::unavailable(
            BACKEND,
            format!(
                "{what}: access denied ({status}): {body}; grant the host's service account \
             roles/storage.objectAdmin on the bucket (retried until it is)"
            ),
        ),
        _ => PortError::unavailable(BACKEND, format!("{what}: {status}: {body}")),
    }
}

impl GcsBlobStore {
    /// Builds a client from `config`; fails if the credentials cannot be set up.
    pub fn connect(config: GcsConfig) -> PortResult<Self> {
        let endpoint = STORAGE.endpoint(config.endpoint.as_deref());
        let auth = Auth::new(&STORAGE, &endpoint, config.auth)
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| {
                PortError::unavailable(BACKEND, format!("cannot build the HTTP client: {e}"))
            })?;
        debug!(endpoint = %endpoint, anonymous = auth.is_anonymous(), "gcs blobstore configured");
        Ok(GcsBlobStore {
            http,
            endpoint,
            project: config.project,
            auth,
            page_size: config.list_page_size.clamp(1, 1000).to_string(),
        })
    }

    /// Where requests go (and why there), for messages.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Health probe: fetches a token (when authenticated) and asks for a bucket's metadata;
    /// any answer but an auth or server failure shows the service is usable.
    pub async fn check(&self) -> PortResult<()> {
        let what = "health probe";
        let resp = self
            .send(
                what,
                self.request(Method::GET, "/storage/v1/b/ledgerhost-health-probe")
                    .await?,
            )
            .await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(status_error(what, resp).await),
        }
    }

    async fn request(&self, method: Method, path: &str) -> PortResult<RequestBuilder> {
        let rb = self
            .http
            .request(method, format!("{}{path}", self.endpoint.url));
        match self.auth.bearer().await {
            Ok(None) => Ok(rb),
            Ok(Some(token)) => Ok(rb.bearer_auth(token)),
            Err(e) => Err(PortError::unavailable(BACKEND, e)),
        }
    }

    async fn send(&self, what: &str, rb: RequestBuilder) -> PortResult<Response> {
        rb.send().await.map_err(|e| {
            PortError::unavailable(
                BACKEND,
                format!(
                    "{what}: cannot reach Cloud Storage at {}: {e}",
                    self.endpoint.url
                ),
            )
        })
    }

    fn object_path(bucket: &str, name: &str) -> String {
        format!(
            "/storage/v1/b/{}/o/{}",
            utf8_percent_encode(bucket, SEGMENT),
            utf8_percent_encode(name, SEGMENT)
        )
    }
}

#[async_trait]
impl BlobStore for GcsBlobStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_bucket(&self, bucket: &str) -> PortResult<()> {
        checked_name(BACKEND, bucket, "bucket", false)?;
        let what = format!("create bucket `{bucket}`");
        let mut rb = self
            .request(Method::POST, "/storage/v1/b")
            .await?
            .json(&serde_json::json!({ "name": bucket }));
        if let Some(p) = &self.project {
            rb = rb.query(&[("project", p)]);
        }
        let resp = self.send(&what, rb).await?;
        match resp.status() {
            // 409: it exists already (ours or, on Google, possibly someone else's: the first
            // put then says so with 403).
            s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
            _ => Err(status_error(&what, resp).await),
        }
    }

    async fn put(&self, bucket: &str, name: &str, data: Vec<u8>) -> PortResult<()> {
        checked_name(BACKEND, bucket, "bucket", false)?;
        checked_name(BACKEND, name, "object name", true)?;
        let what = format!("put `{bucket}/{name}`");
        let size = data.len();
        let rb = self
            .request(
                Method::POST,
                &format!(
                    "/upload/storage/v1/b/{}/o",
                    utf8_percent_encode(bucket, SEGMENT)
                ),
            )
            .await?
            .query(&[("uploadType", "media"), ("name", name)])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data);
        let resp = self.send(&what, rb).await?;
        if !resp.status().is_success() {
            return Err(status_error(&what, resp).await);
        }
        debug!(bucket, name, size, "gcs put");
        Ok(())
    }

    async fn get(&self, bucket: &str, name: &str) -> PortResult<Option<Vec<u8>>> {
        checked_name(BACKEND, bucket, "bucket", false)?;
        checked_name(BACKEND, name, "object name", true)?;
        let what = format!("get `{bucket}/{name}`");
        let rb = self
            .request(Method::GET, &Self::object_path(bucket, name))
            .await?
            .query(&[("alt", "media")]);
        let resp = self.send(&what, rb).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => resp.bytes().await.map(|b| Some(b.to_vec())).map_err(|e| {
                PortError::unavailable(BACKEND, format!("{what}: download interrupted: {e}"))
            }),
            _ => Err(status_error(&what, resp).await),
        }
    }

    async fn delete(&self, bucket: &str, name: &str) -> PortResult<()> {
        checked_name(BACKEND, bucket, "bucket", false)?;
        checked_name(BACKEND, name, "object name", true)?;
        let what = format!("delete `{bucket}/{name}`");
        let rb = self
            .request(Method::DELETE, &Self::object_path(bucket, name))
            .await?;
        let resp = self.send(&what, rb).await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(status_error(&what, resp).await),
        }
    }

    async fn list(&self, bucket: &str, prefix: &str) -> PortResult<Vec<String>> {
        checked_name(BACKEND, bucket, "bucket", false)?;
        let what = format!("list `{bucket}/{prefix}*`");
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut rb = self
                .request(
                    Method::GET,
                    &format!("/storage/v1/b/{}/o", utf8_percent_encode(bucket, SEGMENT)),
                )
                .await?
                .query(&[
                    ("prefix", prefix),
                    ("maxResults", self.page_size.as_str()),
                    ("fields", "items(name),nextPageToken"),
                ]);
            if let Some(t) = &page {
                rb = rb.query(&[("pageToken", t)]);
            }
            let resp = self.send(&what, rb).await?;
            match resp.status() {
                // A missing bucket holds nothing, as with the local store.
                StatusCode::NOT_FOUND => return Ok(Vec::new()),
                s if s.is_success() => {}
                _ => return Err(status_error(&what, resp).await),
            }
            let list: ObjectList = resp.json().await.map_err(|e| PortError::Corrupt {
                backend: BACKEND,
                message: format!("{what}: unreadable listing: {e}"),
            })?;
            names.extend(list.items.into_iter().map(|i| i.name));
            match list.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => break,
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded() {
        assert_eq!(
            GcsBlobStore::object_path("b", "orders/2026 x+y.avro"),
            "/storage/v1/b/b/o/orders%2F2026%20x%2By.avro"
        );
    }

    #[tokio::test]
    async fn bad_names_are_refused_before_any_request() {
        let s = GcsBlobStore::connect(GcsConfig {
            endpoint: Some("http://127.0.0.1:9".into()),
            ..GcsConfig::default()
        })
        .unwrap();
        for bad in ["../x", "a//b", "/abs", ""] {
            let e = s.put("b", bad, vec![]).await.unwrap_err();
            assert!(matches!(e, PortError::Invalid { .. }), "{bad}: {e}");
        }
        // Nothing listens on port 9: a transport failure is retryable.
        let e = s.get("b", "x").await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
}
