//! How enrichers are arranged and run on a batch.
//!
//! Enrichers run in declared order. A run of consecutive async enrichers
//! forms one async stage; inside it, enrichers are arranged in levels by
//! their declared dependencies: a level's enrichers run concurrently on the
//! same batch, and their patches are applied (in declared order) before the
//! next level starts, so a dependent sees what it depends on.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::lifecycle::EnricherHandle;
use crate::enrich::{DynAsyncEnricher, EnrichContext, Enricher, EnricherOptions, Patch};
use crate::error::InitError;
use crate::event::Event;
use crate::observe::Counter;

/// One async enricher as registered with the pipeline.
pub(crate) struct AsyncSlot {
    pub(crate) enricher: Arc<dyn DynAsyncEnricher>,
    pub(crate) opts: EnricherOptions,
    pub(crate) handle: Arc<EnricherHandle>,
}

/// An enricher in declared order.
pub(crate) enum Step {
    Sync(Box<dyn Enricher>),
    Async(AsyncSlot),
}

/// What the worker runs, in order.
pub(crate) enum Stage {
    Sync(Vec<Box<dyn Enricher>>),
    /// Levels of async enrichers; each level runs concurrently.
    Async(Vec<Vec<Arc<AsyncSlot>>>),
}

/// Groups steps into stages and orders each async stage by dependencies.
pub(crate) fn plan(steps: Vec<Step>) -> Result<Vec<Stage>, InitError> {
    let mut seen = HashSet::new();
    for s in &steps {
        if let Step::Async(slot) = s
            && !seen.insert(slot.handle.name.clone())
        {
            return Err(InitError::enricher(
                &format!("`{}`", slot.handle.name),
                "two async enrichers have this name; names must be unique",
            ));
        }
    }
    let all_async: HashSet<String> = seen;

    let mut stages = Vec::new();
    let mut earlier: HashSet<String> = HashSet::new();
    let mut pending_async: Vec<AsyncSlot> = Vec::new();
    let mut pending_sync: Vec<Box<dyn Enricher>> = Vec::new();
    for step in steps {
        match step {
            Step::Sync(e) => {
                if !pending_async.is_empty() {
                    let group = std::mem::take(&mut pending_async);
                    let names: Vec<String> = group.iter().map(|s| s.handle.name.clone()).collect();
                    stages.push(Stage::Async(levels(group, &earlier, &all_async)?));
                    earlier.extend(names);
                }
                pending_sync.push(e);
            }
            Step::Async(slot) => {
                if !pending_sync.is_empty() {
                    stages.push(Stage::Sync(std::mem::take(&mut pending_sync)));
                }
                pending_async.push(slot);
            }
        }
    }
    if !pending_async.is_empty() {
        stages.push(Stage::Async(levels(pending_async, &earlier, &all_async)?));
    }
    if !pending_sync.is_empty() {
        stages.push(Stage::Sync(pending_sync));
    }
    Ok(stages)
}

/// Kahn's algorithm over one group; dependencies on enrichers of earlier
/// stages are already satisfied.
fn levels(
    group: Vec<AsyncSlot>,
    earlier: &HashSet<String>,
    all: &HashSet<String>,
) -> Result<Vec<Vec<Arc<AsyncSlot>>>, InitError> {
    let in_group: HashMap<String, usize> = group
        .iter()
        .enumerate()
        .map(|(i, s)| (s.handle.name.clone(), i))
        .collect();
    let mut indegree = vec![0usize; group.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); group.len()];
    for (i, slot) in group.iter().enumerate() {
        for dep in &slot.opts.depends_on {
            if dep == &slot.handle.name {
                return Err(InitError::enricher(
                    &format!("`{}`", slot.handle.name),
                    "it depends on itself",
                ));
            }
            if earlier.contains(dep) {
                continue;
            }
            match in_group.get(dep) {
                Some(&j) => {
                    indegree[i] += 1;
                    dependents[j].push(i);
                }
                None if all.contains(dep) => {
                    return Err(InitError::enricher(
                        &format!("`{}`", slot.handle.name),
                        format!(
                            "it depends on `{dep}`, which runs after it (a sync enricher is declared between them); declare `{dep}` first"
                        ),
                    ));
                }
                None => {
                    return Err(InitError::enricher(
                        &format!("`{}`", slot.handle.name),
                        format!("it depends on `{dep}`, but no async enricher has that name"),
                    ));
                }
            }
        }
    }
    let mut slots: Vec<Option<Arc<AsyncSlot>>> =
        group.into_iter().map(|s| Some(Arc::new(s))).collect();
    let mut out = Vec::new();
    let mut ready: Vec<usize> = (0..slots.len()).filter(|&i| indegree[i] == 0).collect();
    let mut placed = 0;
    while !ready.is_empty() {
        ready.sort_unstable();
        let mut next = Vec::new();
        let mut level = Vec::new();
        for &i in &ready {
            for &d in &dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    next.push(d);
                }
            }
            if let Some(s) = slots[i].take() {
                level.push(s);
            }
            placed += 1;
        }
        out.push(level);
        ready = next;
    }
    if placed < slots.len() {
        let cycle: Vec<String> = slots
            .iter()
            .flatten()
            .map(|s| format!("`{}`", s.handle.name))
            .collect();
        return Err(InitError::enricher(
            &cycle.join(", "),
            "these async enrichers depend on each other in a cycle",
        ));
    }
    Ok(out)
}

enum Outcome {
    Patches(Vec<Patch>),
    Failed(std::borrow::Cow<'static, str>),
}

/// Runs the async stage's levels on `batch`, all within `deadline`.
pub(crate) async fn run_async(
    levels: &[Vec<Arc<AsyncSlot>>],
    batch: &mut [Event],
    deadline: Instant,
    budget: std::time::Duration,
    record_errors: bool,
) {
    for level in levels {
        let events: &[Event] = batch;
        let outcomes = futures_util::future::join_all(
            level
                .iter()
                .map(|slot| run_one(slot, events, deadline, budget)),
        )
        .await;
        for (slot, outcome) in level.iter().zip(outcomes) {
            let name = &slot.handle.name;
            match outcome {
                Outcome::Patches(patches) => {
                    for (event, patch) in batch.iter_mut().zip(patches) {
                        event.insert_fields(patch.fields);
                        if let (Some(reason), true) = (patch.error, record_errors) {
                            event.add_enrichment_error(name.clone(), reason);
                        }
                    }
                }
                Outcome::Failed(reason) => {
                    if record_errors {
                        for event in batch.iter_mut() {
                            event.add_enrichment_error(name.clone(), reason.clone());
                        }
                    }
                }
            }
        }
    }
}

async fn run_one(
    slot: &AsyncSlot,
    events: &[Event],
    deadline: Instant,
    budget: std::time::Duration,
) -> Outcome {
    let handle = &slot.handle;
    if !handle.is_started() {
        return Outcome::Failed("unavailable".into());
    }
    if Instant::now() >= deadline {
        // An earlier level used up the batch's time: not this enricher's
        // failure, so no call and nothing held against its breaker.
        return Outcome::Failed("timeout".into());
    }
    let ctx = EnrichContext::new(
        handle.metrics.clone(),
        handle.breaker.clone(),
        slot.opts.call_timeout,
        deadline,
        budget,
    );
    let mut patches: Vec<Patch> = std::iter::repeat_with(Patch::default)
        .take(events.len())
        .collect();
    if slot.enricher.guards_own_calls() {
        let fut = AssertUnwindSafe(slot.enricher.enrich(events, &mut patches, &ctx)).catch_unwind();
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(Ok(Ok(()))) => Outcome::Patches(patches),
            Ok(Ok(Err(e))) => Outcome::Failed(e.to_string().into()),
            Ok(Err(_panic)) => {
                handle.metrics.count(Counter::Failure, 1);
                Outcome::Failed("panicked".into())
            }
            Err(_elapsed) => {
                handle.metrics.count(Counter::Timeout, 1);
                Outcome::Failed("timeout".into())
            }
        }
    } else {
        let fut = slot.enricher.enrich(events, &mut patches, &ctx);
        match ctx.call(fut).await {
            Ok(()) => Outcome::Patches(patches),
            Err(e) => Outcome::Failed(e.reason()),
        }
    }
}
