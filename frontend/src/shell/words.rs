//! Splitting an expanded word on white space, for `ProcessWords`.

use super::gocompat::go_is_space;

/// Port of `wordsStruct`; the buffer is passed in because it is shared.
#[derive(Default)]
pub(super) struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    pub(super) fn add_char(&mut self, buf: &mut String, ch: char) {
        if !go_is_space(ch) {
            self.add_raw_char(buf, ch);
        } else if self.in_word && !buf.is_empty() {
            self.words.push(std::mem::take(buf));
            self.in_word = false;
        }
    }

    pub(super) fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }

    pub(super) fn add_string(&mut self, buf: &mut String, s: &str) {
        for ch in s.chars() {
            self.add_char(buf, ch);
        }
    }

    pub(super) fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    pub(super) fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}
