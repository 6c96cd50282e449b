//! Integration tests of the Switchboard core and handlers live beside this
//! file, one per area; shared helpers are in `util/`.
