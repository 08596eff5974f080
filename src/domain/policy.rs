//! Who may do what. Every use case calls [`authorize`] before anything else.

use crate::model::{Error, Principal, Result};

/// An action a principal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read one's own user and account.
    ReadSelf,
    /// Change one's own password.
    ChangeOwnPassword,
    /// End one's own session.
    EndOwnSession,
}

/// Allows or refuses `action`. A user who must change their password may do nothing else (but
/// read themself and log out) until they have.
pub fn authorize(principal: &Principal, action: Action) -> Result<()> {
    match action {
        Action::ReadSelf | Action::ChangeOwnPassword | Action::EndOwnSession => Ok(()),
    }
    .and_then(|()| {
        if principal.password_change_required
            && !matches!(
                action,
                Action::ChangeOwnPassword | Action::ReadSelf | Action::EndOwnSession
            )
        {
            Err(Error::precondition(
                "PASSWORD_CHANGE_REQUIRED",
                "choose a new password first",
            ))
        } else {
            Ok(())
        }
    })
}
