//! The batching policy, as plain data and decisions (text-generation-inference's
//! `State::next_batch` shape): the engine's task owns a [`BatchQueue`], pushes requests in, and
//! asks it what to run whenever the model is free. No channel, thread or tensor is in here, so
//! every rule is unit-tested with hand-made instants.
//!
//! Rules, in the order they apply:
//! - an entry whose deadline has passed is dropped before it is computed (and returned, so its
//!   caller gets DEADLINE_EXCEEDED);
//! - the queue is bounded: past `max_queued` entries a push is refused (RESOURCE_EXHAUSTED);
//! - a batch waits at most `max_batch_delay` from its oldest entry for company, and runs at once
//!   when enough tokens are waiting to fill the budget;
//! - two lanes: interactive (gRPC) ahead of bulk (jobs, `lote run`) at every batch boundary, but
//!   bulk leads at least `bulk_share` of the batches while it has work, so it is never starved;
//! - a batch holds at most `max_batch_size` entries and `max_batch_tokens` tokens counting
//!   padding (rows x longest row); it always includes the oldest entry of its lane and adds
//!   entries of similar length to it while at least 90% of its tokens stay real.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// The least share of real (non-padding) tokens a batch may have.
pub const PADDING_TARGET: f64 = 0.9;

/// Which way a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Interactive,
    Bulk,
}

/// One queued request: its tokens (after tokenization), the batch rows it takes (1, or a
/// generation's beams), and its times.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    pub item: T,
    pub lane: Lane,
    pub tokens: usize,
    pub rows: usize,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
}

/// The knobs, from the `batching` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    pub max_queued: usize,
    pub bulk_share: f64,
}

impl Policy {
    pub fn from_settings(batching: &crate::settings::BatchingSettings) -> Self {
        Self {
            max_batch_tokens: batching.max_batch_tokens,
            max_batch_size: batching.max_batch_size,
            max_batch_delay: batching.max_batch_delay,
            max_queued: batching.max_queued,
            bulk_share: batching.bulk_share,
        }
    }
}

/// What the engine should do now.
#[derive(Debug, PartialEq)]
pub enum Decision<T> {
    /// Run these entries as one batch.
    Run(Vec<Entry<T>>),
    /// Nothing is due yet: ask again at this instant (or when a request arrives).
    WaitUntil(Instant),
    /// The queue is empty.
    Idle,
}

/// Refused: the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    pub queued: usize,
}

pub struct BatchQueue<T> {
    policy: Policy,
    interactive: VecDeque<Entry<T>>,
    bulk: VecDeque<Entry<T>>,
    batches: u64,
    bulk_batches: u64,
}

impl<T> BatchQueue<T> {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            interactive: VecDeque::new(),
            bulk: VecDeque::new(),
            batches: 0,
            bulk_batches: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.interactive.len() + self.bulk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues an entry, or refuses it when the queue is full.
    pub fn push(&mut self, entry: Entry<T>) -> Result<(), (Overloaded, Entry<T>)> {
        if self.len() >= self.policy.max_queued {
            return Err((Overloaded { queued: self.len() }, entry));
        }
        match entry.lane {
            Lane::Interactive => self.interactive.push_back(entry),
            Lane::Bulk => self.bulk.push_back(entry),
        }
        Ok(())
    }

    /// Lowers the padded-token budget of a batch (after one ran out of memory), never below
    /// one token; it is never raised again in this process.
    pub fn lower_token_budget(&mut self, tokens: usize) {
        self.policy.max_batch_tokens = self.policy.max_batch_tokens.min(tokens.max(1));
    }

    /// The current padded-token budget of a batch.
    pub fn token_budget(&self) -> usize {
        self.policy.max_batch_tokens
    }

    /// Puts an entry back at the head of its lane (work that must be redone), even past the
    /// bound: it was already accepted once.
    pub fn push_front(&mut self, entry: Entry<T>) {
        match entry.lane {
            Lane::Interactive => self.interactive.push_front(entry),
            Lane::Bulk => self.bulk.push_front(entry),
        }
    }

    /// When the next batch is due if nothing else arrives: None when the queue is empty or a
    /// batch is due already.
    pub fn due_at(&self) -> Option<Instant> {
        let due = self.oldest_enqueued()? + self.policy.max_batch_delay;
        (!self.budget_is_full()).then_some(due)
    }

    /// Continuous batching: the entries that join a running batch now, within `free_tokens` and
    /// `free_rows`. Oldest first, the leading lane first (bulk keeps its share); the first entry
    /// that does not fit ends the admission, so a large request is not overtaken forever.
    pub fn admit(&mut self, free_tokens: usize, free_rows: usize) -> Vec<Entry<T>> {
        let mut admitted = Vec::new();
        let (mut tokens, mut rows) = (free_tokens, free_rows);
        while let Some(lane) = self.leading_lane() {
            let queue = match lane {
                Lane::Interactive => &mut self.interactive,
                Lane::Bulk => &mut self.bulk,
            };
            let head = queue.front().expect("the leading lane has entries");
            if head.tokens > tokens || head.rows > rows {
                break;
            }
            let entry = queue.pop_front().expect("checked above");
            tokens -= entry.tokens;
            rows -= entry.rows;
            self.batches += 1;
            if lane == Lane::Bulk {
                self.bulk_batches += 1;
            }
            admitted.push(entry);
        }
        admitted
    }

    /// Removes and returns the entries whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Entry<T>> {
        let mut expired = Vec::new();
        for queue in [&mut self.interactive, &mut self.bulk] {
            let mut kept = VecDeque::with_capacity(queue.len());
            for entry in queue.drain(..) {
                if entry.deadline.is_some_and(|d| d <= now) {
                    expired.push(entry);
                } else {
                    kept.push_back(entry);
                }
            }
            *queue = kept;
        }
        expired
    }

    /// Removes entries for which `gone` is true (their caller went away).
    pub fn remove_where(&mut self, gone: impl Fn(&T) -> bool) -> Vec<Entry<T>> {
        let mut removed = Vec::new();
        for queue in [&mut self.interactive, &mut self.bulk] {
            let (out, kept): (Vec<_>, Vec<_>) = queue.drain(..).partition(|e| gone(&e.item));
            removed.extend(out);
            queue.extend(kept);
        }
        removed
    }

    /// The next batch, if one is due at `now`. Call [`BatchQueue::take_expired`] first.
    pub fn next_batch(&mut self, now: Instant) -> Decision<T> {
        let Some(lane) = self.leading_lane() else { return Decision::Idle };
        let oldest = self.oldest_enqueued().expect("a lane has entries");
        let due = oldest + self.policy.max_batch_delay;
        if now < due && !self.budget_is_full() {
            return Decision::WaitUntil(due);
        }
        let batch = self.fill(lane);
        self.batches += 1;
        if lane == Lane::Bulk {
            self.bulk_batches += 1;
        }
        Decision::Run(batch)
    }

    /// Interactive leads unless bulk is owed its share (or interactive is empty).
    fn leading_lane(&self) -> Option<Lane> {
        match (self.interactive.is_empty(), self.bulk.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Lane::Interactive),
            (true, false) => Some(Lane::Bulk),
            (false, false) => {
                let owed = (self.batches + 1) as f64 * self.policy.bulk_share;
                if (self.bulk_batches as f64) < owed.floor() {
                    Some(Lane::Bulk)
                } else {
                    Some(Lane::Interactive)
                }
            }
        }
    }

    fn oldest_enqueued(&self) -> Option<Instant> {
        self.interactive.iter().chain(&self.bulk).map(|e| e.enqueued).min()
    }

    /// Whether the waiting work already fills a batch (no point waiting for company).
    fn budget_is_full(&self) -> bool {
        let entries: usize = self.interactive.iter().chain(&self.bulk).map(|e| e.rows).sum();
        let tokens: usize = self.interactive.iter().chain(&self.bulk).map(|e| e.tokens).sum();
        entries >= self.policy.max_batch_size || tokens >= self.policy.max_batch_tokens
    }

    /// Takes the leading lane's oldest entry, then the queued entries closest to it in length
    /// (leading lane first) while the budget allows.
    fn fill(&mut self, lane: Lane) -> Vec<Entry<T>> {
        let (lead, other) = match lane {
            Lane::Interactive => (&mut self.interactive, &mut self.bulk),
            Lane::Bulk => (&mut self.bulk, &mut self.interactive),
        };
        let head = lead.pop_front().expect("the leading lane has entries");
        let target = head.tokens;
        let mut taken_rows = head.rows;
        let mut batch = vec![head];
        let mut longest = target;
        let mut real = target;
        for queue in [lead, other] {
            let mut order: Vec<usize> = (0..queue.len()).collect();
            order.sort_by_key(|&i| (queue[i].tokens.abs_diff(target), i));
            let mut chosen = Vec::new();
            for i in order {
                if taken_rows + queue[i].rows > self.policy.max_batch_size {
                    continue;
                }
                let width = longest.max(queue[i].tokens);
                let computed = (batch.len() + chosen.len() + 1) * width;
                let efficiency = (real + queue[i].tokens) as f64 / computed.max(1) as f64;
                if computed > self.policy.max_batch_tokens || efficiency < PADDING_TARGET {
                    continue;
                }
                longest = width;
                real += queue[i].tokens;
                taken_rows += queue[i].rows;
                chosen.push(i);
            }
            chosen.sort_unstable_by(|a, b| b.cmp(a));
            let mut taken: Vec<Entry<T>> =
                chosen.into_iter().filter_map(|i| queue.remove(i)).collect();
            taken.reverse();
            batch.extend(taken);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            max_batch_tokens: 100,
            max_batch_size: 4,
            max_batch_delay: Duration::from_millis(5),
            max_queued: 8,
            bulk_share: 0.25,
        }
    }

    fn entry(item: u32, lane: Lane, tokens: usize, at: Instant) -> Entry<u32> {
        Entry { item, lane, tokens, rows: 1, enqueued: at, deadline: None }
    }

    fn items(decision: Decision<u32>) -> Vec<u32> {
        match decision {
            Decision::Run(batch) => batch.into_iter().map(|e| e.item).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn an_idle_model_waits_for_company_at_most_the_delay() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(policy());
        assert_eq!(queue.next_batch(t0), Decision::Idle);
        queue.push(entry(1, Lane::Interactive, 10, t0)).unwrap();
        assert_eq!(queue.next_batch(t0), Decision::WaitUntil(t0 + Duration::from_millis(5)));
        queue.push(entry(2, Lane::Interactive, 10, t0 + Duration::from_millis(2))).unwrap();
        assert_eq!(items(queue.next_batch(t0 + Duration::from_millis(5))), vec![1, 2]);
    }

    #[test]
    fn a_full_budget_runs_without_waiting() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(policy());
        for i in 0..4 {
            queue.push(entry(i, Lane::Interactive, 10, t0)).unwrap();
        }
        assert_eq!(items(queue.next_batch(t0)), vec![0, 1, 2, 3]);
    }

    #[test]
    fn batches_respect_size_and_padded_token_budgets() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(policy());
        for (i, tokens) in [(0, 30), (1, 30), (2, 30), (3, 30), (4, 30)] {
            queue.push(entry(i, Lane::Interactive, tokens, t0)).unwrap();
        }
        // 3 x 30 = 90 fits in 100 tokens; a fourth would make 120.
        assert_eq!(items(queue.next_batch(t0)), vec![0, 1, 2]);
        assert_eq!(items(queue.next_batch(t0 + Duration::from_millis(5))), vec![3, 4]);
    }

    #[test]
    fn similar_lengths_are_grouped_around_the_oldest_entry() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(Policy { max_batch_tokens: 1000, ..policy() });
        for (i, tokens) in [(0, 10), (1, 200), (2, 12), (3, 190), (4, 9), (5, 11)] {
            queue.push(entry(i, Lane::Interactive, tokens, t0)).unwrap();
        }
        // 12 would bring the short batch below 90% real tokens (42 of 48).
        assert_eq!(items(queue.next_batch(t0)), vec![0, 4, 5]);
        let later = t0 + Duration::from_millis(5);
        assert_eq!(items(queue.next_batch(later)), vec![1, 3]);
        assert_eq!(items(queue.next_batch(later)), vec![2]);
    }

    #[test]
    fn a_row_that_would_pad_the_batch_below_the_target_waits_for_its_own() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(Policy { max_batch_tokens: 1000, ..policy() });
        for (i, tokens) in [(0, 10), (1, 10), (2, 20)] {
            queue.push(entry(i, Lane::Interactive, tokens, t0)).unwrap();
        }
        // With 2 (20 tokens) the batch would be 40 real tokens in 60 computed.
        assert_eq!(items(queue.next_batch(t0 + Duration::from_millis(5))), vec![0, 1]);
        assert_eq!(items(queue.next_batch(t0 + Duration::from_millis(5))), vec![2]);
    }

    #[test]
    fn interactive_leads_but_bulk_is_never_starved() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(Policy { max_batch_size: 1, max_queued: 100, ..policy() });
        for i in 0..4 {
            queue.push(entry(100 + i, Lane::Bulk, 10, t0)).unwrap();
        }
        let mut leads = Vec::new();
        for round in 0..8u32 {
            queue.push(entry(round, Lane::Interactive, 10, t0)).unwrap();
            leads.extend(items(queue.next_batch(t0 + Duration::from_secs(1))));
        }
        let bulk = leads.iter().filter(|&&i| i >= 100).count();
        assert_eq!(bulk, 2, "a quarter of 8 batches go to bulk: {leads:?}");
        assert!(leads[0] < 100, "interactive first: {leads:?}");
    }

    #[test]
    fn expired_and_abandoned_entries_leave_before_they_are_computed() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(policy());
        let mut late = entry(1, Lane::Interactive, 10, t0);
        late.deadline = Some(t0 + Duration::from_millis(1));
        queue.push(late).unwrap();
        queue.push(entry(2, Lane::Bulk, 10, t0)).unwrap();
        queue.push(entry(3, Lane::Interactive, 10, t0)).unwrap();
        let expired = queue.take_expired(t0 + Duration::from_millis(1));
        assert_eq!(expired.iter().map(|e| e.item).collect::<Vec<_>>(), vec![1]);
        let gone = queue.remove_where(|&item| item == 3);
        assert_eq!(gone.len(), 1);
        assert_eq!(items(queue.next_batch(t0 + Duration::from_millis(5))), vec![2]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(policy());
        for i in 0..8 {
            queue.push(entry(i, Lane::Interactive, 10, t0)).unwrap();
        }
        let (overloaded, entry) = queue.push(entry(9, Lane::Bulk, 10, t0)).unwrap_err();
        assert_eq!(overloaded, Overloaded { queued: 8 });
        assert_eq!(entry.item, 9);
    }

    #[test]
    fn joiners_fill_the_free_budget_in_order_and_a_large_head_waits() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(Policy { max_queued: 100, ..policy() });
        for (i, tokens) in [(0, 30), (1, 30), (2, 50), (3, 5)] {
            queue.push(entry(i, Lane::Interactive, tokens, t0)).unwrap();
        }
        let admitted: Vec<u32> = queue.admit(70, 10).into_iter().map(|e| e.item).collect();
        assert_eq!(
            admitted,
            vec![0, 1],
            "2 (50 tokens) does not fit in the 10 left, nor may 3 pass it"
        );
        let admitted: Vec<u32> = queue.admit(100, 1).into_iter().map(|e| e.item).collect();
        assert_eq!(admitted, vec![2], "one row free");
        let mut beams = entry(4, Lane::Interactive, 5, t0);
        beams.rows = 4;
        queue.push(beams).unwrap();
        let admitted: Vec<u32> = queue.admit(100, 3).into_iter().map(|e| e.item).collect();
        assert_eq!(admitted, vec![3], "four beams need four free rows");
        assert_eq!(queue.admit(100, 4).len(), 1);
        assert!(queue.is_empty());
    }

    #[test]
    fn joiners_keep_the_bulk_share() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(Policy { max_queued: 100, bulk_share: 0.5, ..policy() });
        for i in 0..4 {
            queue.push(entry(i, Lane::Interactive, 1, t0)).unwrap();
            queue.push(entry(100 + i, Lane::Bulk, 1, t0)).unwrap();
        }
        let admitted: Vec<u32> = queue.admit(100, 4).into_iter().map(|e| e.item).collect();
        assert_eq!(admitted.iter().filter(|&&i| i >= 100).count(), 2, "{admitted:?}");
    }

    #[test]
    fn due_at_is_the_oldest_entry_plus_the_delay_unless_the_budget_is_full() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(policy());
        assert_eq!(queue.due_at(), None);
        queue.push(entry(1, Lane::Bulk, 10, t0)).unwrap();
        assert_eq!(queue.due_at(), Some(t0 + Duration::from_millis(5)));
        queue.push(entry(2, Lane::Bulk, 95, t0)).unwrap();
        assert_eq!(queue.due_at(), None, "105 tokens fill the budget of 100");
    }

    #[test]
    fn a_batch_counts_the_rows_of_beams_against_its_size() {
        let t0 = Instant::now();
        let mut queue = BatchQueue::new(Policy { max_batch_tokens: 1000, ..policy() });
        let mut beams = entry(1, Lane::Interactive, 10, t0);
        beams.rows = 3;
        queue.push(beams).unwrap();
        queue.push(entry(2, Lane::Interactive, 10, t0)).unwrap();
        queue.push(entry(3, Lane::Interactive, 10, t0)).unwrap();
        // 3 beams + 1 row fill the 4 rows.
        assert_eq!(items(queue.next_batch(t0 + Duration::from_millis(5))), vec![1, 2]);
    }
}
