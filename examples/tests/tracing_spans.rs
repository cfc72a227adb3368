//! cachier's `tracing` output, seen by a subscriber of the test's own (a layer that keeps the
//! fields of every `cachier.call` span and of every event): one span per call with function,
//! namespace, backend and outcome, and a backend error as an event with its operation,
//! backend, kind and key.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachier_core::{Cachier, CallOptions, FuncId};
use cachier_memory::MemoryCore;
use cachier_redis::{Config, RedisCore};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

/// Every `cachier.call` span (fields as last recorded, in the order the spans were made), and
/// every event's fields.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<(u64, Fields)>>>,
    events: Arc<Mutex<Vec<Fields>>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "cachier.call" {
            let mut fields = Fields::new();
            attrs.record(&mut Collect(&mut fields));
            self.spans.lock().unwrap().push((id.into_u64(), fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some((_, fields)) = spans.iter_mut().rev().find(|(i, _)| *i == id.into_u64()) {
            values.record(&mut Collect(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        self.events.lock().unwrap().push(fields);
    }
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn one_span_per_call_with_its_outcome() {
    let capture = Capture::default();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let namespace = format!("tracing-spans-{}", std::process::id());
    let cache = Cachier::builder(Arc::new(MemoryCore::new()))
        .namespace(&namespace)
        .expect("namespace")
        .build();
    let f = cache.function(FuncId::new("tracing_spans::double").expect("id"));
    for n in [1u64, 1] {
        f.call(&n, move || async move { n * 2 })
            .await
            .expect("call");
    }
    f.call_with(CallOptions::default().skip_cache(true), &1u64, || async {
        2u64
    })
    .await
    .expect("call");

    let spans: Vec<Fields> = capture
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|(_, f)| f.clone())
        .collect();
    let span = |outcome| {
        fields(&[
            ("function", "tracing_spans::double"),
            ("namespace", &namespace),
            ("backend", "memory"),
            ("outcome", outcome),
        ])
    };
    assert_eq!(spans, [span("miss"), span("hit"), span("bypassed")]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_backend_error_is_an_event_and_the_call_an_error() {
    let capture = Capture::default();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))
        .expect("url")
        .with_connect_timeout(Duration::from_millis(500))
        .with_reconnect_attempts(0);
    let cache = Cachier::builder(Arc::new(
        RedisCore::connect_lazy(config).expect("lazy core"),
    ))
    .namespace(format!("tracing-down-{}", std::process::id()))
    .expect("namespace")
    .build();
    let f = cache.function(FuncId::new("tracing_spans::down").expect("id"));
    let key = f.key(&5u64).expect("key").to_string();
    assert_eq!(f.call(&5u64, || async { 10u64 }).await.expect("call"), 10);

    let spans = capture.spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].1.get("outcome").map(String::as_str), Some("error"));
    assert_eq!(spans[0].1.get("backend").map(String::as_str), Some("redis"));
    let events = capture.events.lock().unwrap().clone();
    let failure = events
        .iter()
        .find(|e| e.get("operation").map(String::as_str) == Some("get"))
        .unwrap_or_else(|| panic!("no backend error event in {events:?}"));
    assert_eq!(failure.get("backend").map(String::as_str), Some("redis"));
    assert_eq!(failure.get("kind").map(String::as_str), Some("unavailable"));
    assert_eq!(failure.get("key"), Some(&key));
    assert!(failure.contains_key("error"), "{failure:?}");
}
