//! Placeholder: the api arrives with its own issue.
