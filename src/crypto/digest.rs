//! The in-memory caches' 256-bit digest (verified tokens, verified client secrets): SHA-256 where
//! the CPU has SHA instructions, BLAKE3 elsewhere. Both are collision resistant, which is all the
//! caches need (a forged token or a wrong secret must not find a verified one's entry), and the
//! digests never leave the process, so each process may pick the faster. Which is faster depends
//! on the CPU, not by a little: for a 521-character token, SHA-256 took 310 ns and BLAKE3 770 ns
//! on an AMD EPYC with SHA extensions (Zen 5); on a CPU without them SHA-256 took 5–10% of an
//! introspection and BLAKE3 a fraction of that.
use std::sync::OnceLock;

use sha2::Digest as _;

pub type Digest256 = [u8; 32];

/// The cache digest of `data`, with the function chosen for this CPU at first use.
pub fn digest256(data: &[u8]) -> Digest256 {
    static CHOSEN: OnceLock<fn(&[u8]) -> Digest256> = OnceLock::new();
    CHOSEN.get_or_init(|| if has_sha_instructions() { sha256 } else { blake3 })(data)
}

fn sha256(data: &[u8]) -> Digest256 {
    sha2::Sha256::digest(data).into()
}

fn blake3(data: &[u8]) -> Digest256 {
    blake3::hash(data).into()
}

fn has_sha_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("sha2")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_function_for_this_cpu_over_the_whole_input() {
        let token = "eyJhbGciOiJFZERTQSJ9.".repeat(25);
        let expected = if has_sha_instructions() { sha256(token.as_bytes()) } else { blake3(token.as_bytes()) };
        assert_eq!(digest256(token.as_bytes()), expected);
        // Every byte counts: the last one changed gives another digest.
        let mut other = token.clone().into_bytes();
        *other.last_mut().unwrap() ^= 1;
        assert_ne!(digest256(token.as_bytes()), digest256(&other));
    }

    #[test]
    fn both_functions_are_the_standard_ones() {
        // SHA-256("abc") (FIPS 180-2, appendix B.1) and BLAKE3("abc") (the reference output).
        assert_eq!(hex(sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(blake3(b"abc")), "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
    }

    fn hex(d: Digest256) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}
