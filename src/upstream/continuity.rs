//! How a paged listing proves it missed nothing while the list changes under
//! it: each page after the first is asked from the last position already
//! listed, so it must start with (or at least hold) the item listed last.
//!
//! Paging by plain offset loses an item whenever one before it is deleted
//! mid-listing: everything after shifts one place down, and the item that
//! moves into the page already read is never seen. With a one-item overlap
//! that shift shows: the item listed last is no longer where the next page
//! starts ([`Broken::Shifted`]); the caller then reads from further back or
//! lists again. A page that holds the item listed last continues the listing
//! without a gap (its items are contiguous in the list as it was when the
//! page was read), so keys created meanwhile (a shift the other way) only
//! bring repeats, which are dropped.
//!
//! A listing whose first page holds one item (a server paging one at a
//! time) cannot overlap; it pages by plain offset, unchecked, as before.

/// Why a page cannot be taken as the listing's next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Broken {
    /// The item listed last is not in a page asked from its position: items
    /// before it were deleted (or it was). Reading on could skip one.
    Shifted(String),
    /// A page of items already listed where new ones were due: the server
    /// ignores `offset`. Stopping could drop items; the listing fails.
    Repeats(String),
}

/// Where one paged listing stands: how far it is listed, and what it listed last.
#[derive(Debug, Default)]
pub(super) struct Continuity {
    /// Positions `0..covered` are listed without a gap.
    covered: usize,
    /// The first page's length: the page size as far as anyone knows.
    step: usize,
    /// The id of the item at position `covered - 1` (overlapping listings only).
    last: Option<Box<str>>,
}

impl Continuity {
    /// How many positions are listed.
    #[cfg(test)]
    pub(super) fn covered(&self) -> usize {
        self.covered
    }

    /// The page size the first page showed.
    pub(super) fn step(&self) -> usize {
        self.step
    }

    /// Items each page after the first shares with the one before it: one,
    /// unless pages hold a single item.
    pub(super) fn overlap(&self) -> usize {
        usize::from(self.step >= 2)
    }

    /// The offset the next page is asked from.
    pub(super) fn next_offset(&self) -> usize {
        self.covered - self.overlap().min(self.covered)
    }

    /// The offset one page before the item listed last: where it is found
    /// again when fewer than a page of items before it were deleted.
    pub(super) fn one_page_back(&self) -> usize {
        self.covered.saturating_sub(self.step)
    }

    /// Where the items new to the listing start in the page at `offset`
    /// (`offset <= next_offset()`), whose item ids are `ids`: just past the
    /// item listed last. `Shifted` when that item is not in the page.
    pub(super) fn locate<I: AsRef<str>>(
        &self,
        offset: usize,
        ids: impl IntoIterator<Item = I>,
    ) -> Result<usize, Broken> {
        let Some(last) = self.last.as_deref().filter(|_| self.overlap() == 1) else {
            return Ok(0);
        };
        match ids.into_iter().position(|id| id.as_ref() == last) {
            Some(at) => Ok(at + 1),
            None => Err(Broken::Shifted(format!(
                "the item listed last (at offset {}) is not in the page asked from offset {offset}: \
                 the list shifted (items deleted while it was paged)",
                self.covered - 1
            ))),
        }
    }

    /// Records the page at `offset` of `len` items, the new ones starting at
    /// `from` ([`Continuity::locate`]), of which `added` were not listed
    /// before; `page_last` is the id of its last item. `Ok(true)`: the
    /// listing is complete.
    pub(super) fn advance(
        &mut self,
        offset: usize,
        len: usize,
        from: usize,
        page_last: Option<&str>,
        added: usize,
    ) -> Result<bool, Broken> {
        if self.covered == 0 {
            // The first page: it shows the page size.
            self.step = len;
            self.covered = len;
            self.last = page_last.map(Box::from);
            return Ok(len == 0);
        }
        if self.overlap() == 0 {
            return self.advance_plain(offset, len, added);
        }
        let past = len - from.min(len);
        if past == 0 {
            // Nothing past the item listed last. From its own position, in a
            // page shorter than the first, that is the end; in a page as long
            // as the first, the server served earlier items where later ones
            // were due.
            if offset + len <= self.covered {
                return Ok(offset + 1 == self.covered && len < self.step);
            }
            if len < self.step {
                return Ok(true);
            }
            return Err(Broken::Repeats(format!(
                "page at offset {offset} repeats earlier items"
            )));
        }
        if added == 0 {
            return Err(Broken::Repeats(format!(
                "page at offset {offset} repeats earlier items"
            )));
        }
        self.covered = offset + len;
        self.last = page_last.map(Box::from);
        Ok(false)
    }

    /// Paging without overlap: an empty page right after what is listed ends
    /// it, one inside what is listed (items deleted meanwhile) ends nothing.
    fn advance_plain(&mut self, offset: usize, len: usize, added: usize) -> Result<bool, Broken> {
        if len == 0 {
            return Ok(offset == self.covered);
        }
        if added == 0 && offset + len > self.covered {
            return Err(Broken::Repeats(format!(
                "page at offset {offset} repeats earlier items"
            )));
        }
        self.covered = self.covered.max(offset + len);
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a page through `locate` and `advance`, counting as new the ids not in `seen`.
    fn feed(
        c: &mut Continuity,
        seen: &mut Vec<&'static str>,
        offset: usize,
        ids: &[&'static str],
    ) -> Result<bool, Broken> {
        let from = c.locate(offset, ids)?;
        let mut added = 0;
        for id in &ids[from.min(ids.len())..] {
            if !seen.contains(id) {
                seen.push(id);
                added += 1;
            }
        }
        c.advance(offset, ids.len(), from, ids.last().copied(), added)
    }

    #[test]
    fn overlapping_pages_end_on_the_last_item_alone() {
        let (mut c, mut seen) = (Continuity::default(), Vec::new());
        assert_eq!(feed(&mut c, &mut seen, 0, &["a", "b", "c"]), Ok(false));
        assert_eq!((c.step(), c.overlap(), c.next_offset()), (3, 1, 2));
        assert_eq!(feed(&mut c, &mut seen, 2, &["c", "d", "e"]), Ok(false));
        assert_eq!(c.next_offset(), 4);
        // A short page continues too.
        assert_eq!(feed(&mut c, &mut seen, 4, &["e", "f"]), Ok(false));
        assert_eq!(feed(&mut c, &mut seen, 5, &["f"]), Ok(true));
        assert_eq!(seen, ["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn a_deletion_before_the_page_shows_as_a_shift() {
        let (mut c, mut seen) = (Continuity::default(), Vec::new());
        feed(&mut c, &mut seen, 0, &["a", "b", "c"]).unwrap();
        // "a" deleted: position 2 now holds "d"; "c" (listed last) moved to 1.
        let shifted = feed(&mut c, &mut seen, 2, &["d", "e", "f"]);
        assert!(matches!(shifted, Err(Broken::Shifted(_))), "{shifted:?}");
        assert_eq!(c.covered(), 3, "nothing recorded");
        // Read from further back: the page holds "c", and continues after it.
        assert_eq!(feed(&mut c, &mut seen, 0, &["b", "c", "d"]), Ok(false));
        assert_eq!(feed(&mut c, &mut seen, 2, &["d", "e", "f"]), Ok(false));
        assert_eq!(feed(&mut c, &mut seen, 4, &["f"]), Ok(true));
        assert_eq!(seen, ["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn an_insertion_before_the_page_only_brings_repeats() {
        let (mut c, mut seen) = (Continuity::default(), Vec::new());
        feed(&mut c, &mut seen, 0, &["a", "b", "c"]).unwrap();
        // "new" created first: every item moved one place up.
        assert_eq!(feed(&mut c, &mut seen, 2, &["b", "c", "d"]), Ok(false));
        // The end: the item listed last, one place further up.
        assert_eq!(c.next_offset(), 4);
        assert_eq!(feed(&mut c, &mut seen, 4, &["d"]), Ok(true));
        let (mut c, mut seen) = (Continuity::default(), Vec::new());
        feed(&mut c, &mut seen, 0, &["a", "b", "c"]).unwrap();
        assert_eq!(feed(&mut c, &mut seen, 2, &["b", "c"]), Ok(true));
    }

    #[test]
    fn a_server_that_ignores_offset_fails_as_repeats() {
        let (mut c, mut seen) = (Continuity::default(), Vec::new());
        feed(&mut c, &mut seen, 0, &["a", "b", "c"]).unwrap();
        let repeated = feed(&mut c, &mut seen, 2, &["a", "b", "c"]);
        assert!(matches!(repeated, Err(Broken::Repeats(_))), "{repeated:?}");
    }

    #[test]
    fn pages_of_one_item_page_by_plain_offset() {
        let (mut c, mut seen) = (Continuity::default(), Vec::new());
        assert_eq!(feed(&mut c, &mut seen, 0, &["a"]), Ok(false));
        assert_eq!((c.overlap(), c.next_offset()), (0, 1));
        assert_eq!(feed(&mut c, &mut seen, 1, &["b"]), Ok(false));
        // An empty page inside what is listed ends nothing; one right after does.
        assert_eq!(feed(&mut c, &mut seen, 1, &[]), Ok(false));
        assert!(matches!(
            feed(&mut c, &mut seen, 2, &["a"]),
            Err(Broken::Repeats(_))
        ));
        assert_eq!(feed(&mut c, &mut seen, 2, &[]), Ok(true));
        let mut empty = Continuity::default();
        assert_eq!(feed(&mut empty, &mut seen, 0, &[]), Ok(true));
    }
}
