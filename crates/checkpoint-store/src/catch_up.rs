//! The rule by which an in-process cache of the database (the vector index in
//! `neighbours/in_process.rs`, the term cache in `term_cache.rs`) finds every row committed since
//! its last catch-up, written once for both.
//!
//! A cache asks for rows by number: a key, a departure's number. Where numbers are given out in
//! commit order (SQLite's one writer), every row committed since the last catch-up is numbered
//! above the highest number seen then. On PostgreSQL numbers come from sequences, taken when a
//! transaction inserts and made visible when it commits, so a transaction that took a lower
//! number may commit after one that took a higher: "above the highest seen" would miss it for
//! good. A cache there re-reads the numbers above a *safe low* instead: the highest number it had
//! seen at least [`IN_FLIGHT_WINDOW`] ago. That assumes no transaction takes longer than the
//! window between taking a number and committing; the stores' transactions take seconds. Reading
//! numbers (keys) is cheap; a cache fetches the rows behind only those it lacks.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How long a PostgreSQL transaction may take between taking a number and committing before a
/// cache stops looking below that number for late arrivals.
pub(crate) const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(120);

/// Whether a backend gives out numbers in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberOrder {
    /// One writer at a time: nothing appears later below the highest number seen (SQLite).
    FollowsCommits,
    /// A number taken earlier may become visible later (PostgreSQL's sequences).
    Unordered,
}

impl NumberOrder {
    pub(crate) fn of(follows_commits: bool) -> NumberOrder {
        if follows_commits { NumberOrder::FollowsCommits } else { NumberOrder::Unordered }
    }
}

/// The number at or below which a cache has everything (or everything there will ever be), and
/// the catch-ups that will move it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SafeLow {
    safe_low: i64,
    /// (when a catch-up began, the highest number it saw), oldest first; an entry older than the
    /// window moves the safe low up to its number. Only the first catch-up to see a number is
    /// kept: a later one with the same number would move the safe low no sooner.
    history: VecDeque<(Instant, i64)>,
}

impl SafeLow {
    /// A safe low at `number`, with no catch-up recorded.
    pub(crate) fn at(number: i64) -> SafeLow {
        SafeLow { safe_low: number, history: VecDeque::new() }
    }

    /// Numbers above this one are to be read again.
    pub(crate) fn get(&self) -> i64 {
        self.safe_low
    }

    /// Records a catch-up that began at `began` and saw everything committed up to `high_water`.
    /// In commit order that is everything there is up to it (and on SQLite the high water may go
    /// down, when the highest keys left and may be given out again); otherwise the safe low moves
    /// to the high water of catch-ups that began at least the window before this one.
    pub(crate) fn caught_up(&mut self, began: Instant, high_water: i64, order: NumberOrder) {
        match order {
            NumberOrder::FollowsCommits => {
                self.safe_low = high_water;
                self.history.clear();
            }
            NumberOrder::Unordered => {
                if self.history.back().is_none_or(|&(_, seen)| seen != high_water) {
                    self.history.push_back((began, high_water));
                }
                while let Some(&(at, seen)) = self.history.front()
                    && began.saturating_duration_since(at) >= IN_FLIGHT_WINDOW
                {
                    self.safe_low = self.safe_low.max(seen);
                    self.history.pop_front();
                }
            }
        }
    }

    /// Raises the safe low to a number the database says is settled (stored at least the window
    /// ago): for a cache just built or loaded, whose own history does not cover the window yet.
    pub(crate) fn raise_to(&mut self, settled: i64) {
        self.safe_low = self.safe_low.max(settled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_the_safe_low_moves_to_what_was_seen_a_window_ago_and_not_sooner() {
        let start = Instant::now();
        let mut low = SafeLow::at(0);
        low.caught_up(start, 10, NumberOrder::Unordered);
        assert_eq!(low.get(), 0);
        low.caught_up(start + Duration::from_secs(30), 25, NumberOrder::Unordered);
        low.caught_up(start + IN_FLIGHT_WINDOW - Duration::from_millis(1), 30, NumberOrder::Unordered);
        assert_eq!(low.get(), 0, "nothing was seen a whole window ago");
        low.caught_up(start + IN_FLIGHT_WINDOW, 30, NumberOrder::Unordered);
        assert_eq!(low.get(), 10);
        low.caught_up(start + IN_FLIGHT_WINDOW + Duration::from_secs(40), 31, NumberOrder::Unordered);
        assert_eq!(low.get(), 25);
        // The first catch-up that saw 30 counts, not the later one that saw it again.
        low.caught_up(start + IN_FLIGHT_WINDOW * 2 - Duration::from_millis(1), 31, NumberOrder::Unordered);
        assert_eq!(low.get(), 30);
    }

    #[test]
    fn in_commit_order_the_safe_low_is_the_high_water_even_going_down() {
        let start = Instant::now();
        let mut low = SafeLow::at(0);
        low.caught_up(start, 10, NumberOrder::FollowsCommits);
        assert_eq!(low.get(), 10);
        low.caught_up(start, 7, NumberOrder::FollowsCommits);
        assert_eq!(low.get(), 7);
    }

    #[test]
    fn a_settled_number_raises_the_safe_low_but_never_lowers_it() {
        let mut low = SafeLow::at(5);
        low.raise_to(3);
        assert_eq!(low.get(), 5);
        low.raise_to(9);
        assert_eq!(low.get(), 9);
    }
}
