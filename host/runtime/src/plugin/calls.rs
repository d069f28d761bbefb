//! The calls into a plugin, one per world: a batch to a consumer (0.2, or 0.1 with every
//! field), a tick to a scheduled plugin, a request to an HTTP-triggered one.

use std::time::Instant;

use ledgerhost_core::{Disposition, Event};

use crate::bindings::{wit, wit02};
use crate::convert;

use super::Plugin;
use super::error::CallError;
use super::http::{HttpRequest, HttpResponse};
use super::instance::{Exports, Pre};

impl Plugin {
    /// Hands a batch to a consumer; one disposition per event comes back, in order. A 0.2
    /// consumer gets one call per run of one table and writer schema (normally the whole
    /// batch), with only the columns, Avro and attributes its manifest asks for.
    pub async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, CallError> {
        let expected = events.len();
        if let Pre::ConsumerV01(_) = self.pre {
            let wit_events: Vec<wit::Event> =
                events.into_iter().map(convert::event_to_wit).collect();
            return self.call_v01(expected, wit_events).await;
        }
        let mut batches: Vec<_> = convert::runs(events)
            .into_iter()
            .map(|run| self.layout(&run).batch(run, &self.selection))
            .collect();
        // An empty batch is still a call (as in 0.1): the plugin answers it with nothing.
        if batches.is_empty() {
            batches.push(wit02::Batch {
                table: String::new(),
                schema_fingerprint: String::new(),
                columns: Vec::new(),
                events: Vec::new(),
            });
        }
        let mut guard = self.begin().await?;
        let live = guard.as_mut().expect("instance built by begin");
        let Exports::Consumer(exports) = &live.exports else {
            return Err(CallError::WrongWorld {
                plugin: self.plugin_name(),
                world: self.manifest.world,
            });
        };
        let mut out = Vec::with_capacity(expected);
        for batch in &batches {
            let n = batch.events.len();
            let result = exports.call_handle(&mut live.store, batch).await;
            match result {
                Ok(d) if d.len() == n => {
                    out.extend(d.into_iter().map(convert::disposition_from_wit))
                }
                Ok(d) => {
                    self.end(live);
                    return Err(CallError::WrongDispositionCount {
                        plugin: self.plugin_name(),
                        expected: n,
                        got: d.len(),
                    });
                }
                Err(e) => {
                    self.end(live);
                    let err = self.failure(live, e);
                    *guard = None;
                    return Err(err);
                }
            }
        }
        self.end(live);
        Ok(out)
    }

    /// A batch through a 0.1 consumer: every event with its field names.
    async fn call_v01(
        &self,
        expected: usize,
        wit_events: Vec<wit::Event>,
    ) -> Result<Vec<Disposition>, CallError> {
        let mut guard = self.begin().await?;
        let live = guard.as_mut().expect("instance built by begin");
        let Exports::ConsumerV01(exports) = &live.exports else {
            return Err(CallError::WrongWorld {
                plugin: self.plugin_name(),
                world: self.manifest.world,
            });
        };
        let result = exports.call_handle(&mut live.store, &wit_events).await;
        self.end(live);
        match result {
            Ok(d) if d.len() == expected => {
                Ok(d.into_iter().map(convert::disposition_from_wit).collect())
            }
            Ok(d) => Err(CallError::WrongDispositionCount {
                plugin: self.plugin_name(),
                expected,
                got: d.len(),
            }),
            Err(e) => {
                let err = self.failure(live, e);
                *guard = None;
                Err(err)
            }
        }
    }

    /// One tick of a scheduled plugin; `now_micros` is the host's clock.
    pub async fn tick(&self, now_micros: i64) -> Result<(), CallError> {
        let mut guard = self.begin().await?;
        let live = guard.as_mut().expect("instance built by begin");
        let Exports::Scheduled(exports) = &live.exports else {
            return Err(CallError::WrongWorld {
                plugin: self.plugin_name(),
                world: self.manifest.world,
            });
        };
        let result = exports.call_tick(&mut live.store, now_micros).await;
        self.end(live);
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(CallError::Failed {
                plugin: self.plugin_name(),
                message,
            }),
            Err(e) => {
                let err = self.failure(live, e);
                *guard = None;
                Err(err)
            }
        }
    }

    /// One request to an HTTP-triggered plugin.
    pub async fn http(&self, request: HttpRequest) -> Result<HttpResponse, CallError> {
        let mut guard = self.begin().await?;
        let live = guard.as_mut().expect("instance built by begin");
        let Exports::Http(exports) = &live.exports else {
            return Err(CallError::WrongWorld {
                plugin: self.plugin_name(),
                world: self.manifest.world,
            });
        };
        let req = wit::HttpRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            body: request.body,
        };
        let started = Instant::now();
        let result = exports.call_handle_request(&mut live.store, &req).await;
        self.end(live);
        tracing::debug!(
            plugin = self.manifest.name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "http call"
        );
        match result {
            Ok(r) => Ok(HttpResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(e) => {
                let err = self.failure(live, e);
                *guard = None;
                Err(err)
            }
        }
    }
}
