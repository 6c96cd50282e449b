//! Integration tests of the Switchboard core and handlers live beside this
//! file, one per area; shared helpers are in the `switchboard-test-support`
//! crate (`support/`), and `bin/` holds the test server they spawn.
