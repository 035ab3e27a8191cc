//! The bounded, contiguous series buffer behind the store's rows and the seasonal
//! residual rows.

/// How a point of history is kept. f32 holds 7 significant digits, far finer than any
/// deviation a detector scores, at half the memory of f64: the history is most of the
/// agent's memory (a 6 h history at 15 s is 1,440 points per series). Detectors compute
/// in f64. Magnitudes beyond f32's range (about 3.4e38) become infinite: gaps.
pub type Sample = f32;

/// A bounded series of values whose last `cap` points are always one contiguous slice.
///
/// Points are appended at the end; when the buffer reaches `cap + slack` the oldest
/// surplus is dropped with one `memmove`. With `slack = cap / 64` memory is at most
/// 1.016 × `cap` and each pushed point costs about 64 moved values (256 bytes of
/// `memmove`, negligible beside decoding the point), in exchange for handing detectors a
/// plain `&[Sample]` instead of two halves of a circular buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    buf: Vec<Sample>,
    cap: usize,
}

impl Ring {
    /// An empty ring holding at most `cap` points (at least 1).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Ring {
            buf: Vec::with_capacity(cap + Self::slack(cap)),
            cap,
        }
    }

    fn slack(cap: usize) -> usize {
        (cap / 64).max(8)
    }

    /// Appends a point (rounded to [`Sample`]), dropping the oldest beyond `cap`.
    pub fn push(&mut self, v: f64) {
        if self.buf.len() == self.cap + Self::slack(self.cap) {
            let surplus = self.buf.len() - self.cap + 1;
            self.buf.drain(..surplus);
        }
        self.buf.push(v as Sample);
    }

    /// The kept points, oldest first (at most `cap`).
    pub fn as_slice(&self) -> &[Sample] {
        &self.buf[self.buf.len().saturating_sub(self.cap)..]
    }

    /// Number of kept points.
    pub fn len(&self) -> usize {
        self.buf.len().min(self.cap)
    }

    /// Most points kept.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// `true` when no point was pushed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Overwrites the point `back` steps before the last (0 = last); `false` when it
    /// is no longer kept.
    pub fn set_from_end(&mut self, back: usize, v: f64) -> bool {
        if back >= self.len() {
            return false;
        }
        let i = self.buf.len() - 1 - back;
        self.buf[i] = v as Sample;
        true
    }

    /// The point `back` steps before the last (0 = last), if kept.
    pub fn from_end(&self, back: usize) -> Option<f64> {
        let i = self.buf.len().checked_sub(back + 1)?;
        (back < self.len()).then(|| f64::from(self.buf[i]))
    }

    /// The last point, if any.
    pub fn last(&self) -> Option<f64> {
        self.buf.last().copied().map(f64::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_cap_points_contiguous() {
        let mut r = Ring::new(4);
        for i in 0..100 {
            r.push(f64::from(i));
            let s = r.as_slice();
            assert_eq!(s.len(), (i as usize + 1).min(4));
            assert_eq!(*s.last().unwrap(), i as Sample);
            assert!(s.windows(2).all(|w| w[1] == w[0] + 1.0));
        }
        assert!(r.buf.capacity() <= 4 + 8);
    }

    #[test]
    fn overwrites_from_the_end() {
        let mut r = Ring::new(3);
        for v in [1.0, 2.0, 3.0, 4.0] {
            r.push(v);
        }
        assert!(r.set_from_end(1, 9.0));
        assert_eq!(r.as_slice(), &[2.0, 9.0, 4.0]);
        assert_eq!(r.from_end(1), Some(9.0));
        assert!(!r.set_from_end(3, 1.0));
        assert_eq!(r.from_end(3), None);
    }
}
