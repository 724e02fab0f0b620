//! `raft-net`: placeholder until issue #3 (see DESIGN.md).
