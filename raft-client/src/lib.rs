//! `raft-client`: placeholder until issue #3 (see DESIGN.md).
