//! How long a worker pauses its AI work when the AI service refuses the account (a bad key, no
//! access, no credit): not a verdict on any book, so no attempt is spent, but no request of any
//! book can succeed until a person acts.

use std::time::Duration;

/// The first pause of AI work after the service refused the account; each refusal in a row
/// doubles it, up to [`ACCOUNT_REFUSED_MAX_PAUSE`]. A key or a balance is fixed by a person, in
/// minutes or hours: probing more often only fills the logs.
pub const ACCOUNT_REFUSED_FIRST_PAUSE: Duration = Duration::from_secs(60);
/// The longest pause of AI work after refusals of the account.
pub const ACCOUNT_REFUSED_MAX_PAUSE: Duration = Duration::from_secs(30 * 60);

/// How long to pause AI work after `refusals_in_a_row` refusals of the account (at least 1).
pub fn account_refused_pause(refusals_in_a_row: u32) -> Duration {
    let doublings = refusals_in_a_row.saturating_sub(1).min(16);
    ACCOUNT_REFUSED_FIRST_PAUSE.saturating_mul(1 << doublings).min(ACCOUNT_REFUSED_MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_for_a_refused_account_double_from_a_minute_up_to_half_an_hour() {
        let secs = Duration::from_secs;
        assert_eq!(account_refused_pause(0), secs(60));
        assert_eq!(account_refused_pause(1), secs(60));
        assert_eq!(account_refused_pause(2), secs(120));
        assert_eq!(account_refused_pause(5), secs(960));
        assert_eq!(account_refused_pause(6), secs(1800));
        assert_eq!(account_refused_pause(u32::MAX), secs(1800));
    }
}
