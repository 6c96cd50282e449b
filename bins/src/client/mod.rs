//! The interactive and file-download client behind `switchboard-client`.
