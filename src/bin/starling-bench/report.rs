//! Results: one ordered set of named numbers per run, printed for people and, with `--json`, as
//! exactly one JSON line. The text is rendered from the same values, so both always agree.

use crate::hist::Histogram;
use crate::os::CpuMark;

#[derive(Clone, Debug)]
pub enum Val {
    Str(String),
    Int(u64),
    Num(f64),
}

/// An ordered JSON object of scalars.
#[derive(Default)]
pub struct Json {
    fields: Vec<(&'static str, Val)>,
}

impl Json {
    pub fn new() -> Json {
        Json::default()
    }

    pub fn str(&mut self, k: &'static str, v: &str) -> &mut Json {
        self.fields.push((k, Val::Str(v.to_string())));
        self
    }

    pub fn int(&mut self, k: &'static str, v: u64) -> &mut Json {
        self.fields.push((k, Val::Int(v)));
        self
    }

    pub fn num(&mut self, k: &'static str, v: f64) -> &mut Json {
        self.fields.push((k, Val::Num(v)));
        self
    }

    pub fn get(&self, k: &str) -> Option<&Val> {
        self.fields.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
    }

    fn f(&self, k: &str) -> Option<f64> {
        match self.get(k)? {
            Val::Int(i) => Some(*i as f64),
            Val::Num(n) => Some(*n),
            Val::Str(_) => None,
        }
    }

    fn s(&self, k: &str) -> String {
        match self.get(k) {
            Some(Val::Str(s)) => s.clone(),
            Some(Val::Int(i)) => group(*i as f64, 0),
            Some(Val::Num(n)) => group(*n, 1),
            None => "-".into(),
        }
    }

    pub fn to_line(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&quote(k));
            out.push(':');
            match v {
                Val::Str(s) => out.push_str(&quote(s)),
                Val::Int(n) => out.push_str(&n.to_string()),
                Val::Num(x) if x.is_finite() => out.push_str(&format!("{:.3}", x)),
                Val::Num(_) => out.push_str("null"),
            }
        }
        out.push('}');
        out
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let has = |k: &str| self.get(k).is_some();
        let label = self.s("label");
        let label = if label.is_empty() {
            String::new()
        } else {
            format!(" [{label}]")
        };
        o.push_str(&format!(
            "{} on {} (run {}){label}\n",
            self.s("scenario"),
            self.s("target"),
            self.s("run")
        ));
        if has("clients") {
            o.push_str(&format!(
                "  connections   {} requested, {} connected, {} failed over {} source address(es)\n",
                self.s("clients"),
                self.s("connected"),
                self.s("failed"),
                self.s("source_ips")
            ));
            o.push_str(&format!(
                "  connect rate  {} CONNACK/s ({} s for all)\n",
                self.s("connect_rate"),
                self.s("connect_s")
            ));
            if has("tls_resumed") {
                o.push_str(&format!(
                    "  tls           {} of the handshakes resumed a session\n",
                    self.s("tls_resumed")
                ));
            }
            if has("bench_cpu_pct_connect") {
                o.push_str(&format!(
                    "  cpu connecting broker {} % ({} µs/connect), bench {} % ({} µs/connect) (% of one core)\n",
                    self.s("broker_cpu_pct_connect"),
                    self.s("broker_cpu_us_per_connect"),
                    self.s("bench_cpu_pct_connect"),
                    self.s("bench_cpu_us_per_connect")
                ));
            }
            o.push_str(&format!(
                "  held          {} answered PINGREQ after {} s idle ({} closed early, {} silent)\n",
                self.s("held"),
                self.s("hold_s"),
                self.s("closed_early"),
                self.s("no_pingresp")
            ));
            if has("broker_bytes_per_conn") {
                o.push_str(&format!(
                    "  broker memory {} bytes/connection\n",
                    self.s("broker_bytes_per_conn")
                ));
            }
        } else if has("retained_messages") {
            o.push_str(&format!(
                "  loaded        {} retained x {} B in {} s; broker memory {} bytes/message\n",
                self.s("retained_messages"),
                self.s("size"),
                self.s("retained_load_s"),
                self.s("retained_bytes_per_msg")
            ));
            o.push_str(&format!(
                "  streamed      {} to one subscriber at qos {} in {} s: {} msg/s\n",
                self.s("retained_delivered"),
                self.s("qos"),
                self.s("retained_delivery_s"),
                self.s("retained_delivery_rate")
            ));
        } else {
            let rate = match self.f("rate_per_pub") {
                Some(r) if r > 0.0 => format!("{} msg/s per publisher", group(r, 1)),
                _ => "max rate".into(),
            };
            o.push_str(&format!(
                "  qos {}, {} B payload, {} pubs, {} subs, window {}, {rate}, {} s measured after {} s warm-up\n",
                self.s("qos"),
                self.s("size"),
                self.s("pubs"),
                self.s("subs"),
                self.s("window"),
                self.s("duration_s"),
                self.s("warmup_s"),
            ));
            if has("published_rate") {
                o.push_str(&format!(
                    "  published     {} msg/s  ({} sent, {} acked, {} unacked)\n",
                    self.s("published_rate"),
                    self.s("sent"),
                    self.s("acked"),
                    self.s("unacked")
                ));
            }
            if has("delivered_rate") {
                o.push_str(&format!(
                    "  delivered     {} msg/s  ({} in total)\n",
                    self.s("delivered_rate"),
                    self.s("delivered")
                ));
                if has("expected") {
                    let (what, k) = if self.f("qos") == Some(0.0) {
                        ("dropped", "dropped")
                    } else {
                        ("lost", "lost")
                    };
                    o.push_str(&format!(
                        "  {what:<13} {} of {} expected deliveries ({} of them the tail not received by the end of the drain); {} duplicates, {} gaps, {} misrouted (drained in {} s)\n",
                        self.s(k),
                        self.s("expected"),
                        self.s("missing_tail"),
                        self.s("duplicates"),
                        self.s("gaps"),
                        self.s("misrouted"),
                        self.s("drain_used_s"),
                    ));
                } else {
                    o.push_str(&format!(
                        "  order         {} duplicates, {} gaps, {} without a bench stamp\n",
                        self.s("duplicates"),
                        self.s("gaps"),
                        self.s("foreign")
                    ));
                }
                o.push_str(&format!(
                    "  latency µs    p50 {}  p99 {}  p99.9 {}  min {}  max {}  ({} samples)\n",
                    self.s("latency_us_p50"),
                    self.s("latency_us_p99"),
                    self.s("latency_us_p999"),
                    self.s("latency_us_min"),
                    self.s("latency_us_max"),
                    self.s("latency_samples"),
                ));
            }
        }
        if has("broker_cpu_s") {
            let per_msg = if has("broker_cpu_us_per_msg") {
                format!(", {} µs/msg", self.s("broker_cpu_us_per_msg"))
            } else {
                String::new()
            };
            o.push_str(&format!(
                "  broker        cpu {} s = {} %{per_msg}\n",
                self.s("broker_cpu_s"),
                self.s("broker_cpu_pct")
            ));
        }
        if has("broker_rss_peak") {
            o.push_str(&format!(
                "  broker rss    {} → {} MiB, peak {} MiB, VmHWM {} MiB\n",
                mib(self.f("broker_rss_before")),
                mib(self.f("broker_rss_after")),
                mib(self.f("broker_rss_peak")),
                mib(self.f("broker_hwm")),
            ));
        }
        if has("bench_cpu_s") {
            o.push_str(&format!(
                "  bench         cpu {} s = {} %\n",
                self.s("bench_cpu_s"),
                self.s("bench_cpu_pct")
            ));
        }
        if self.f("errors").unwrap_or(0.0) > 0.0 {
            o.push_str(&format!(
                "  ERRORS        {} clients failed (see above)\n",
                self.s("errors")
            ));
        }
        o
    }
}

fn mib(b: Option<f64>) -> String {
    b.map(|b| format!("{:.1}", b / 1_048_576.0))
        .unwrap_or_else(|| "-".into())
}

/// `1234567.89` → `1,234,567.9` (with `decimals` digits after the point).
fn group(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(a, b)| (a, b));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Latency percentiles in microseconds.
pub struct Latency {
    samples: u64,
    p50: f64,
    p99: f64,
    p999: f64,
    min: f64,
    max: f64,
}

impl From<&Histogram> for Latency {
    fn from(h: &Histogram) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            samples: h.count(),
            p50: us(h.quantile(0.5)),
            p99: us(h.quantile(0.99)),
            p999: us(h.quantile(0.999)),
            min: us(h.min()),
            max: us(h.max()),
        }
    }
}

impl Latency {
    pub fn add_to(&self, j: &mut Json) {
        j.int("latency_samples", self.samples)
            .num("latency_us_p50", self.p50)
            .num("latency_us_p99", self.p99)
            .num("latency_us_p999", self.p999)
            .num("latency_us_min", self.min)
            .num("latency_us_max", self.max);
    }
}

/// Broker and bench CPU over the measured interval, broker memory over the run. `msgs` is the
/// number of messages the CPU time is divided by (0: not per message).
#[allow(clippy::too_many_arguments)]
pub fn add_cpu_mem(
    j: &mut Json,
    broker_pid: Option<u32>,
    cpu0: CpuMark,
    cpu1: CpuMark,
    secs: f64,
    rss_before: Option<u64>,
    mem_after: Option<(u64, u64)>,
    rss_peak: Option<u64>,
    msgs: u64,
) {
    if let Some(pid) = broker_pid {
        j.int("broker_pid", u64::from(pid));
        if let (Some(a), Some(b)) = (cpu0.broker, cpu1.broker) {
            let cpu = b - a;
            j.num("broker_cpu_s", cpu)
                .num("broker_cpu_pct", 100.0 * cpu / secs);
            if msgs > 0 {
                j.num("broker_cpu_us_per_msg", cpu * 1e6 / msgs as f64);
            }
        }
        if let (Some(before), Some((after, hwm)), Some(peak)) = (rss_before, mem_after, rss_peak) {
            j.int("broker_rss_before", before)
                .int("broker_rss_after", after)
                .int("broker_rss_peak", peak.max(after))
                .int("broker_hwm", hwm);
        }
    }
    if let (Some(a), Some(b)) = (cpu0.bench, cpu1.bench) {
        j.num("bench_cpu_s", b - a)
            .num("bench_cpu_pct", 100.0 * (b - a) / secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_and_grouping() {
        let mut j = Json::new();
        j.str("label", "a \"b\"\n").int("n", 3).num("x", 1.5);
        assert_eq!(j.to_line(), r#"{"label":"a \"b\"\n","n":3,"x":1.500}"#);
        assert_eq!(group(1234567.891, 1), "1,234,567.9");
        assert_eq!(group(999.0, 0), "999");
        assert_eq!(group(-1000.0, 0), "-1,000");
    }
}
