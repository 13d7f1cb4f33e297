//! What the benches share: the checking sink, counters read from `/proc`,
//! the child processes' result lines, medians, the key sequences.

// Each bench uses most, not all, of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fapilog::{Event, Sink, SinkError};

/// What a run got wrong, given its shutdown report and what the sink saw:
/// an event missing, dropped or failed, an enrichment error, an event
/// holding another id's row, or other than `enriched` events enriched.
pub fn delivery_problems(
    report: &fapilog::observe::ShutdownReport,
    tally: &Tally,
    n: u64,
    enriched: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    if report.emitted != n || report.dropped != 0 || report.timed_out || report.sink_failures != 0 {
        problems.push(format!("shutdown report: {report:?}"));
    }
    let seen = tally.events.load(Ordering::Relaxed);
    let with_user = tally.enriched.load(Ordering::Relaxed);
    let wrong = tally.wrong_user.load(Ordering::Relaxed);
    let with_errors = tally.with_errors.load(Ordering::Relaxed);
    if seen != n {
        problems.push(format!("the sink saw {seen} events, {n} were logged"));
    }
    if with_errors != 0 {
        problems.push(format!("{with_errors} events carry enrichment errors"));
    }
    if wrong != 0 {
        problems.push(format!("{wrong} events hold another id's row"));
    }
    if with_user != enriched {
        problems.push(format!("{with_user} events enriched, expected {enriched}"));
    }
    problems
}

/// What the sink saw.
#[derive(Default)]
pub struct Tally {
    pub events: AtomicU64,
    pub enriched: AtomicU64,
    pub wrong_user: AtomicU64,
    pub with_errors: AtomicU64,
    /// The worker thread's time on a CPU and waiting for one, as of the
    /// last flush (the last one follows the last batch).
    pub worker_cpu_ns: AtomicU64,
    pub worker_runq_ns: AtomicU64,
}

/// CPU time (user + system) of the whole process so far, in nanoseconds:
/// `getrusage(RUSAGE_SELF)`, which counts every thread, those that have
/// already exited included (a pipeline's worker after its shutdown).
pub fn process_cpu_ns() -> u64 {
    // SAFETY: `getrusage` writes a `rusage` into the zeroed value given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0;
        }
        usage
    };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Minor page faults of this thread so far (`/proc/thread-self/stat`).
pub fn thread_minor_faults() -> u64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses:
            // state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, …
            let rest = s.rsplit_once(')')?.1.to_owned();
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// This thread's time on a CPU and time runnable but waiting for one, in
/// nanoseconds (`/proc/thread-self/schedstat`, Linux).
pub fn thread_schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// Checks each event (enriched with the right user or row? any enrichment
/// error?)
/// and throws it away.
pub struct CheckingSink {
    pub tally: Arc<Tally>,
    /// Set: hold the first batch until the flag is up (the caller is done).
    pub hold: Option<Arc<AtomicBool>>,
}

impl Sink for CheckingSink {
    fn name(&self) -> &str {
        "checking_discard"
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if let Some(hold) = self.hold.take() {
            while !hold.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let (mut n, mut enriched, mut wrong, mut errors) = (0, 0, 0, 0);
        for e in events.iter().filter(|e| e.target() != "fapilog") {
            n += 1;
            if e.enrichment_errors().next().is_some() {
                errors += 1;
            }
            if let Some(user) = e.field("user") {
                enriched += 1;
                if user.get("id") != e.field("user_id") {
                    wrong += 1;
                }
            }
        }
        let t = &self.tally;
        t.events.fetch_add(n, Ordering::Relaxed);
        t.enriched.fetch_add(enriched, Ordering::Relaxed);
        t.wrong_user.fetch_add(wrong, Ordering::Relaxed);
        t.with_errors.fetch_add(errors, Ordering::Relaxed);
        Ok(())
    }

    /// Runs on the worker's thread: records how it spent its time so far.
    async fn flush(&mut self) -> Result<(), SinkError> {
        if let Some((cpu, runq)) = thread_schedstat() {
            self.tally.worker_cpu_ns.store(cpu, Ordering::Relaxed);
            self.tally.worker_runq_ns.store(runq, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// "met" or "NOT met" for a goal; the goals are about full (`--bench`)
/// runs, and a smoke run is too short to judge.
pub fn verdict(full: bool, met: bool) -> &'static str {
    match (full, met) {
        (false, _) => "smoke run, not judged",
        (true, true) => "met",
        (true, false) => "NOT met",
    }
}

/// The median of `key` over the runs of `setup`.
pub fn median_of(runs: &[Run], setup: &str, key: &str) -> f64 {
    median(
        runs.iter()
            .filter(|r| r.setup() == setup)
            .map(|r| r.num(key))
            .collect(),
    )
}

/// One finished run: the `key=value` pairs of the child's `RESULT` line.
pub struct Run(pub BTreeMap<String, String>);

impl Run {
    pub fn parse(line: &str) -> Option<Run> {
        let rest = line.strip_prefix("RESULT ")?;
        let pairs = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Run(pairs))
    }

    pub fn setup(&self) -> &str {
        self.0.get("setup").map_or("", String::as_str)
    }

    pub fn num(&self, key: &str) -> f64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q`-quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The bench's command line (after the program name).
pub struct Args(Vec<String>);

impl Args {
    pub fn from_env() -> Self {
        Args(std::env::args().skip(1).collect())
    }

    /// Whether `flag` was given.
    pub fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }

    /// The value after `name`, if given.
    pub fn opt(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .cloned()
    }

    /// The number after `name`, or `default`.
    pub fn num(&self, name: &str, default: usize) -> usize {
        self.opt(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
            .unwrap_or(default)
    }

    /// `--setups a,b`, or every known setup.
    pub fn setups(&self, known: &[&str]) -> Vec<String> {
        match self.opt("--setups") {
            Some(list) => list.split(',').map(str::to_owned).collect(),
            None => known.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Runs one child process and parses its result line; on failure prints
/// what it said and returns `None`.
pub fn run_child(cmd: &mut Command, setup: &str) -> Option<Run> {
    let out = cmd.output().expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), stdout.lines().find_map(Run::parse)) {
        (true, Some(run)) => Some(run),
        _ => {
            eprintln!(
                "run {setup} failed ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
    }
}

/// `n` ids in 1..=`users`, Zipf-distributed with exponent `s`, from a fixed
/// seed: a shorter sequence is a prefix of a longer one.
pub fn zipf_ids(n: usize, users: u64, s: f64, seed: u64) -> Vec<i64> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let zipf = rand_distr::Zipf::new(users as f64, s).expect("valid Zipf parameters");
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n).map(|_| zipf.sample(&mut rng) as i64).collect()
}

/// Ids 1..=n, each once, in an order fixed by `seed`.
pub fn shuffled_ids(n: usize, seed: u64) -> Vec<i64> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut ids: Vec<i64> = (1..=n as i64).collect();
    ids.shuffle(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed));
    ids
}

/// Peak resident set size of this process, in KiB.
pub fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
