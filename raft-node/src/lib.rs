//! `raft-node`: placeholder until issue #3 (see DESIGN.md).
