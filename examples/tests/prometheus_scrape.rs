//! The Prometheus example, scraped: its exporter serves on a free local port, a few rounds of
//! its workload run, and the text fetched over HTTP parses into the metric families cachier
//! promises, with values that match the function's own `stats()`.
//!
//! One test in this binary: the exporter installs its recorder process-wide.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

#[allow(dead_code)] // `main` and `DEFAULT_PORT` are the example's own
#[path = "../prometheus.rs"]
mod example;

/// One sample line: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A metric family: its `# TYPE`, its `# HELP` if any, and its samples (for a histogram, the
/// `_bucket`, `_sum` and `_count` series).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: Option<String>,
    samples: Vec<Sample>,
}

/// Parses the Prometheus text format (version 0.0.4) into families by name. Fails on a line it
/// does not understand, so a malformed exposition fails the test.
fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or(format!("bad HELP: {line}"))?;
            families.entry(name.to_owned()).or_default().help = Some(help.to_owned());
        } else if line.starts_with('#') {
            continue;
        } else {
            let sample = parse_sample(line)?;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| sample.name.strip_suffix(suffix))
                .find(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
                .unwrap_or(&sample.name)
                .to_owned();
            let entry = families
                .get_mut(&family)
                .ok_or(format!("sample before its TYPE: {line}"))?;
            entry.samples.push(sample);
        }
    }
    Ok(families)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let bad = || format!("bad sample line: {line}");
    let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().map_err(|_| bad())?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').ok_or_else(bad)?;
            let mut labels = BTreeMap::new();
            // Label values here never hold `",` (function ids, namespaces, numbers).
            for pair in body.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").ok_or_else(bad)?;
                labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
            (name, labels)
        }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `GET /metrics` over a plain TCP connection; returns the body of a `200 OK`.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let response = String::from_utf8(response).map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("no header/body separator")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200: {head}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

/// Joins the chunks of a chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// A port free now (the exporter binds it right after; a lost race is retried).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

fn value(family: &Family, name: &str, want: &[(&str, &str)]) -> f64 {
    family
        .samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} sample with {want:?} in {family:?}"))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_exporter_serves_parsable_families() {
    let mut tries = 0;
    let addr = loop {
        match example::install_exporter(free_port()) {
            Ok(addr) => break addr,
            Err(e) if tries < 5 && e.to_string().contains("bind") => tries += 1,
            Err(e) => panic!("the exporter did not start: {e}"),
        }
    };
    let cache = example::cache();
    let f = example::square_function(&cache);
    for _ in 0..3 {
        example::round(&cache, &f).await.expect("a round");
    }
    let stats = f.stats();
    assert_eq!((stats.misses, stats.hits), (10, 20), "{stats:?}");

    let text = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .expect("the scrape task")
        .unwrap_or_else(|e| panic!("scrape of {addr}: {e}"));
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n--- scraped:\n{text}"));

    let labels = [
        ("function", "prometheus::square"),
        ("namespace", "prometheus-example"),
        ("backend", "memory"),
    ];
    for (name, want) in [
        ("cachier_cache_hits_total", 20.0),
        ("cachier_cache_misses_total", 10.0),
        ("cachier_recalculations_total", 10.0),
    ] {
        let family = families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in:\n{text}"));
        assert_eq!(family.kind, "counter", "{name}");
        assert!(family.help.is_some(), "{name} has no HELP line");
        assert_eq!(value(family, name, &labels), want, "{name}");
    }

    let duration = families
        .get("cachier_call_duration_seconds")
        .unwrap_or_else(|| panic!("no call duration family in:\n{text}"));
    assert_eq!(duration.kind, "histogram");
    let hit = [labels.as_slice(), &[("outcome", "hit")]].concat();
    let miss = [labels.as_slice(), &[("outcome", "miss")]].concat();
    assert_eq!(
        value(duration, "cachier_call_duration_seconds_count", &hit),
        20.0
    );
    assert_eq!(
        value(duration, "cachier_call_duration_seconds_count", &miss),
        10.0
    );
    // Every miss sleeps 20 ms: the 25 ms bucket holds at most the hits and none of the misses
    // below 20 ms, the +Inf bucket holds them all.
    let inf = [miss.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(
        value(duration, "cachier_call_duration_seconds_bucket", &inf),
        10.0
    );
    let fast = [miss.as_slice(), &[("le", "0.005")]].concat();
    assert_eq!(
        value(duration, "cachier_call_duration_seconds_bucket", &fast),
        0.0
    );
    assert!(value(duration, "cachier_call_duration_seconds_sum", &miss) >= 0.2);

    let ns = [("namespace", "prometheus-example"), ("backend", "memory")];
    let entries = families.get("cachier_entries").expect("cachier_entries");
    assert_eq!(entries.kind, "gauge");
    assert_eq!(value(entries, "cachier_entries", &ns), 10.0);
    let bytes = families
        .get("cachier_stored_bytes")
        .expect("cachier_stored_bytes");
    assert_eq!(bytes.kind, "gauge");
    assert!(value(bytes, "cachier_stored_bytes", &ns) > 0.0);
}
