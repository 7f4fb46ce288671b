//! What a downloaded output really is, from its first bytes. A provider's
//! `Content-Type` header is only a claim; tollgate serves kept files with
//! the type their bytes show, and keeps only images and videos.

/// Bytes [`content_type`] needs to see.
pub const SNIFF_BYTES: usize = 16;

/// The media type of `head` (a file's first bytes), when it is one we keep.
pub fn content_type(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if head.len() >= 12 && &head[4..8] == b"ftyp" {
        if &head[8..12] == b"qt  " { Some("video/quicktime") } else { Some("video/mp4") }
    } else if starts(b"\x1a\x45\xdf\xa3") {
        Some("video/webm")
    } else {
        None
    }
}

/// The types a kept file may have, by the stored name (the database holds
/// text; responses need a static one).
pub fn known(stored: &str) -> &'static str {
    ["image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4", "video/quicktime", "video/webm"]
        .into_iter()
        .find(|t| *t == stored)
        .unwrap_or("application/octet-stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_images_and_videos_by_their_bytes_and_nothing_else() {
        assert_eq!(content_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(content_type(b"\xff\xd8\xff\xe0\0\x10JFIF"), Some("image/jpeg"));
        assert_eq!(content_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(content_type(b"\0\0\0\x18ftypmp42\0\0\0\0"), Some("video/mp4"));
        assert_eq!(content_type(b"\x1a\x45\xdf\xa3\x01\0\0\0"), Some("video/webm"));
        assert_eq!(content_type(b"<html><body>expired"), None);
        assert_eq!(content_type(b""), None);
        assert_eq!(known("image/png"), "image/png");
        assert_eq!(known("text/html"), "application/octet-stream");
    }
}
