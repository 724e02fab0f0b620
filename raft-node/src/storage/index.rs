//! Where the live log entries sit on disk: one [`Span`] per `Entries` record
//! that still holds live entries, without the entries themselves.
//!
//! Invariants (checked by [`SpanIndex::check`] in tests and debug builds):
//! spans are in WAL order, non-empty, and strictly ascending by index; after
//! recovery and at every later point they are also contiguous
//! (`spans[k + 1].first == spans[k].last + 1`). Because a new record always
//! discards every live entry at or after its own first index, WAL order and
//! index order agree, so the live entries of older segments are always lower
//! than those of newer ones.

use raft_core::Index;

/// The live part of one `Entries` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// The first live entry of the record.
    pub(crate) first: Index,
    /// The last live entry of the record.
    pub(crate) last: Index,
    /// The segment holding the record.
    pub(crate) seq: u64,
    /// The byte offset of the record in that segment.
    pub(crate) offset: u64,
}

/// The live spans, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpanIndex {
    spans: Vec<Span>,
}

impl SpanIndex {
    /// Applies an `Entries` record covering `first..=last`: every live entry at
    /// or after `first` is discarded, then the new span is added.
    pub(crate) fn append(&mut self, span: Span) {
        assert!(span.first <= span.last, "empty span {span:?}");
        self.truncate_from(span.first);
        self.spans.push(span);
    }

    /// Discards every live entry at or after `index`.
    pub(crate) fn truncate_from(&mut self, index: Index) {
        while self.spans.last().is_some_and(|s| s.first >= index) {
            self.spans.pop();
        }
        if let Some(last) = self.spans.last_mut() {
            last.last = last.last.min(index - 1);
        }
    }

    /// Discards every live entry at or below `index`.
    pub(crate) fn compact_to(&mut self, index: Index) {
        let dead = self.spans.iter().take_while(|s| s.last <= index).count();
        self.spans.drain(..dead);
        if let Some(first) = self.spans.first_mut() {
            first.first = first.first.max(index + 1);
        }
    }

    /// Discards every live entry.
    pub(crate) fn clear(&mut self) {
        self.spans.clear();
    }

    /// The spans, oldest first.
    pub(crate) fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The first live index, if any.
    pub(crate) fn first_index(&self) -> Option<Index> {
        self.spans.first().map(|s| s.first)
    }

    /// The last live index, if any.
    pub(crate) fn last_index(&self) -> Option<Index> {
        self.spans.last().map(|s| s.last)
    }

    /// The spans holding some entry of `lo..=hi`.
    pub(crate) fn overlapping(&self, lo: Index, hi: Index) -> impl Iterator<Item = &Span> {
        let start = self.spans.partition_point(|s| s.last < lo);
        self.spans[start..].iter().take_while(move |s| s.first <= hi)
    }

    /// The highest live index held by segment `seq`, if it holds any.
    pub(crate) fn last_in_segment(&self, seq: u64) -> Option<Index> {
        self.spans.iter().rev().find(|s| s.seq == seq).map(|s| s.last)
    }

    /// Checks the invariants: non-empty spans, ascending in index and in WAL
    /// position, and, if `contiguous`, without holes.
    pub(crate) fn check(&self, contiguous: bool) -> Result<(), String> {
        for s in &self.spans {
            if s.first > s.last {
                return Err(format!("empty span {s:?}"));
            }
        }
        for pair in self.spans.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.first <= a.last || (b.seq, b.offset) <= (a.seq, a.offset) {
                return Err(format!("spans out of order: {a:?} then {b:?}"));
            }
            if contiguous && b.first != a.last + 1 {
                return Err(format!(
                    "entries {}..{} are missing between {a:?} and {b:?}",
                    a.last + 1,
                    b.first
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(first: Index, last: Index, offset: u64) -> Span {
        Span { first, last, seq: 1, offset }
    }

    #[test]
    fn a_lower_append_trims_and_drops_later_spans() {
        let mut index = SpanIndex::default();
        index.append(span(1, 10, 0));
        index.append(span(11, 20, 100));
        index.append(span(5, 6, 200));
        assert_eq!(index.spans(), &[span(1, 4, 0), span(5, 6, 200)]);
        index.check(true).unwrap();
    }

    #[test]
    fn compaction_drops_covered_spans_and_trims_the_first() {
        let mut index = SpanIndex::default();
        index.append(span(1, 10, 0));
        index.append(span(11, 20, 100));
        index.compact_to(12);
        assert_eq!(index.spans(), &[span(13, 20, 100)]);
        index.compact_to(25);
        assert_eq!(index.last_index(), None);
    }

    #[test]
    fn overlapping_finds_exactly_the_spans_touching_the_range() {
        let mut index = SpanIndex::default();
        index.append(span(1, 10, 0));
        index.append(span(11, 20, 100));
        index.append(span(21, 30, 200));
        let offsets = |lo, hi| index.overlapping(lo, hi).map(|s| s.offset).collect::<Vec<_>>();
        assert_eq!(offsets(10, 11), vec![0, 100]);
        assert_eq!(offsets(12, 19), vec![100]);
        assert_eq!(offsets(31, 40), Vec::<u64>::new());
        assert_eq!(offsets(0, 0), Vec::<u64>::new());
    }
}
