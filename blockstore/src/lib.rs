//! Kite block store on sled: blocks, commit info, indexes and app state, committed atomically.

#![forbid(unsafe_code)]
