//! Placeholder: the controller arrives with its own issue.
