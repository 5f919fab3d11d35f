//! `--key-password`: decrypting a legacy encrypted PEM key never panics on any text and
//! password, and a DER key encrypted here (independently: OpenSSL's `EVP_BytesToKey` with MD5,
//! CBC, PKCS#7, every cipher Go accepts) under any password and IV decrypts back to the same
//! bytes.
#![no_main]

use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};
use sidekick::fuzzing::decrypt_legacy_pem;

/// `DEK-Info` cipher names with their key and IV lengths.
const CIPHERS: [(&str, usize, usize); 5] = [
    ("DES-CBC", 8, 8),
    ("DES-EDE3-CBC", 24, 8),
    ("AES-128-CBC", 16, 16),
    ("AES-192-CBC", 24, 16),
    ("AES-256-CBC", 32, 16),
];
const LABELS: [&str; 3] = ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"];

fn evp_bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
    let mut key = Vec::new();
    let mut block: Vec<u8> = Vec::new();
    while key.len() < len {
        let mut h = Md5::new();
        h.update(&block);
        h.update(password);
        h.update(salt);
        block = h.finalize().to_vec();
        key.extend_from_slice(&block);
    }
    key.truncate(len);
    key
}

fn encrypt(cipher: &str, key: &[u8], iv: &[u8], plain: &[u8]) -> Vec<u8> {
    fn run<C: KeyIvInit + BlockEncryptMut>(key: &[u8], iv: &[u8], plain: &[u8]) -> Vec<u8> {
        C::new_from_slices(key, iv)
            .expect("key and IV lengths come from the cipher table")
            .encrypt_padded_vec_mut::<Pkcs7>(plain)
    }
    match cipher {
        "DES-CBC" => run::<cbc::Encryptor<des::Des>>(key, iv, plain),
        "DES-EDE3-CBC" => run::<cbc::Encryptor<des::TdesEde3>>(key, iv, plain),
        "AES-128-CBC" => run::<cbc::Encryptor<aes::Aes128>>(key, iv, plain),
        "AES-192-CBC" => run::<cbc::Encryptor<aes::Aes192>>(key, iv, plain),
        _ => run::<cbc::Encryptor<aes::Aes256>>(key, iv, plain),
    }
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Any text and password.
        let (password, pem) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&[][..], rest),
        };
        let password = String::from_utf8_lossy(password);
        let pem = String::from_utf8_lossy(pem);
        if let Ok(der) = decrypt_legacy_pem(&pem, &password) {
            assert_eq!(
                der.first(),
                Some(&0x30),
                "a decrypted key is a DER SEQUENCE"
            );
        }
        return;
    }
    // Round trip: mode picks cipher and label, then the IV, a password chunk, then the key.
    let (name, key_len, iv_len) = CIPHERS[usize::from(mode >> 1) % CIPHERS.len()];
    let label = LABELS[usize::from(mode >> 4) % LABELS.len()];
    if rest.len() < iv_len + 1 {
        return;
    }
    let (iv, rest) = rest.split_at(iv_len);
    let pw_len = usize::from(rest[0]).min(rest.len() - 1);
    let password = String::from_utf8_lossy(&rest[1..1 + pw_len]).into_owned();
    let mut der = vec![0x30];
    der.extend_from_slice(&rest[1 + pw_len..]);

    let key = evp_bytes_to_key(password.as_bytes(), &iv[..8], key_len);
    let sealed = base64(&encrypt(name, &key, iv, &der));
    let iv_hex: String = iv.iter().map(|b| format!("{b:02X}")).collect();
    let mut pem =
        format!("-----BEGIN {label}-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: {name},{iv_hex}\n\n");
    for line in sealed.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    if password.is_empty() {
        return; // the sidecar asks for --key-password before decrypting
    }
    assert_eq!(
        decrypt_legacy_pem(&pem, &password),
        Ok(der),
        "{name} {label} with password {password:?}"
    );
});
