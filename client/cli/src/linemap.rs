//! Where the items of a file start, for messages: the line of item N (a record
//! of `import`, a statement of `batch`), kept sparsely so that a million items
//! one per line cost one mark.

/// The lines of the file where items start, kept sparsely: a mark wherever the
/// distance between an item's index and its line changes (a header, an embedded
/// newline, a blank line, a statement over several lines).
#[derive(Default)]
pub(crate) struct LineMap {
    marks: Vec<(u64, u64)>,
}

impl LineMap {
    /// Item `row` (counting from 0) starts on `line`; items are noted in
    /// order, their lines in any order.
    pub(crate) fn note(&mut self, row: u64, line: u64) {
        if self.marks.last().is_none_or(|&(r, l)| line.wrapping_sub(l) != row - r) {
            self.marks.push((row, line));
        }
    }

    /// The line item `row` starts on.
    pub(crate) fn line_of(&self, row: u64) -> u64 {
        let i = self.marks.partition_point(|&(r, _)| r <= row);
        self.marks.get(i.wrapping_sub(1)).map_or(row + 1, |&(r, l)| l + (row - r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_marks() {
        let mut m = LineMap::default();
        for (row, line) in [(0, 2), (1, 1), (2, 3), (3, 7), (4, 8)] {
            m.note(row, line);
        }
        assert_eq!((0..5).map(|r| m.line_of(r)).collect::<Vec<_>>(), [2, 1, 3, 7, 8]);
        assert_eq!(m.marks.len(), 4);
    }
}
