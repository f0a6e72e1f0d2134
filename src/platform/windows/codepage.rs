//! The system's ANSI code page: WinInetd was an ANSI program, so it read
//! its config in that code page (cp1252 on a western Windows), and so do
//! the files written for it. A config that is not valid UTF-8 is read in it.

use std::ptr;

use windows_sys::Win32::Globalization::{
    CP_ACP, GetACP, MB_ERR_INVALID_CHARS, MultiByteToWideChar,
};

/// `bytes` decoded from the ANSI code page, and the code page's number;
/// `None` when they are not valid in it (a broken double-byte sequence, in
/// an Asian code page) or too long for the call.
pub fn decode_ansi(bytes: &[u8]) -> Option<(String, u32)> {
    // SAFETY: GetACP takes nothing and cannot fail.
    let page = unsafe { GetACP() };
    if bytes.is_empty() {
        return Some((String::new(), page));
    }
    let len = i32::try_from(bytes.len()).ok()?;
    // MultiByteToWideChar(CP_ACP, MB_ERR_INVALID_CHARS): fail on a byte
    // the code page does not map, rather than guess.
    // https://learn.microsoft.com/windows/win32/api/stringapiset/nf-stringapiset-multibytetowidechar
    // SAFETY: `bytes` is valid for `len` bytes; a null output of size 0
    // asks for the length the output needs, and writes nothing.
    let needed = unsafe {
        MultiByteToWideChar(
            CP_ACP,
            MB_ERR_INVALID_CHARS,
            bytes.as_ptr(),
            len,
            ptr::null_mut(),
            0,
        )
    };
    let capacity = usize::try_from(needed).ok().filter(|&n| n > 0)?;
    let mut wide = vec![0u16; capacity];
    // SAFETY: `bytes` is valid for `len` bytes, `wide` for `needed` units,
    // and the call writes at most `needed`.
    let written = unsafe {
        MultiByteToWideChar(
            CP_ACP,
            MB_ERR_INVALID_CHARS,
            bytes.as_ptr(),
            len,
            wide.as_mut_ptr(),
            needed,
        )
    };
    if written != needed {
        return None;
    }
    String::from_utf16(&wide).ok().map(|text| (text, page))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wine's ANSI code page is 1252 unless its locale says otherwise.
    #[test]
    fn cp1252_bytes_are_read() {
        let (text, page) = decode_ansi(b"caf\xE9 \x80 ok").expect("valid in the ANSI code page");
        if page == 1252 {
            assert_eq!(text, "caf\u{e9} \u{20ac} ok");
        }
        assert_eq!(decode_ansi(b""), Some((String::new(), page)));
        assert_eq!(
            decode_ansi(b"plain").map(|(t, _)| t).as_deref(),
            Some("plain")
        );
    }
}
