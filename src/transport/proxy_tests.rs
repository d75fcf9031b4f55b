//! PROXY header framing: every form haproxy sends, and the ways a header can be wrong.

use super::*;

/// Reads a header from `bytes` and returns it with what is left unread.
async fn read(bytes: &[u8]) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
    let mut stream = bytes;
    let h = read_header(&mut stream).await;
    (h, stream.to_vec())
}

fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | cmd);
    h.push(family);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

#[tokio::test]
async fn v1_tcp4_tcp6_unknown_and_nothing_more_read() {
    let (h, rest) = read(b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 1883\r\n\x10\x0c").await;
    assert_eq!(
        h.unwrap(),
        ProxyHeader::Proxied {
            source: "192.0.2.1:51234".parse().unwrap(),
            destination: "198.51.100.2:1883".parse().unwrap(),
        }
    );
    assert_eq!(
        rest, b"\x10\x0c",
        "the bytes after the header stay for MQTT"
    );
    let (h, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 8883\r\n").await;
    assert_eq!(
        h.unwrap(),
        ProxyHeader::Proxied {
            source: "[2001:db8::1]:4000".parse().unwrap(),
            destination: "[2001:db8::2]:8883".parse().unwrap(),
        }
    );
    let (h, _) = read(b"PROXY UNKNOWN\r\n").await;
    assert_eq!(h.unwrap(), ProxyHeader::Unknown);
    let (h, _) = read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").await;
    assert_eq!(h.unwrap(), ProxyHeader::Unknown);
}

#[tokio::test]
async fn v1_malformed() {
    for line in [
        &b"PROXY TCP4 192.0.2.1 198.51.100.2 51234\r\n"[..],
        b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
        b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 1\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 01 1\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 1\r\n",
        b"PROXY UDP4 192.0.2.1 198.51.100.2 1 1\r\n",
        b"PROXY TCP4  192.0.2.1 198.51.100.2 1 1\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 1\n\r\n",
    ] {
        let (h, _) = read(line).await;
        assert!(
            matches!(h, Err(ProxyError::Malformed(_))),
            "{:?}: {h:?}",
            String::from_utf8_lossy(line)
        );
    }
    // No CRLF within 107 bytes: refused after reading at most 107 bytes.
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 200]].concat();
    let (h, rest) = read(&long).await;
    assert!(matches!(h, Err(ProxyError::Malformed(_))), "{h:?}");
    assert_eq!(rest.len(), long.len() - V1_MAX, "bounded read");
}

#[tokio::test]
async fn v2_proxy_local_unknown() {
    let mut body4 = vec![192, 0, 2, 1, 198, 51, 100, 2];
    body4.extend_from_slice(&51234u16.to_be_bytes());
    body4.extend_from_slice(&1883u16.to_be_bytes());
    // TLVs after the addresses are skipped.
    let with_tlv = [body4.as_slice(), &[0x04, 0, 1, 0]].concat();
    let (h, rest) = read(&[v2(1, 0x11, &with_tlv), b"\x10".to_vec()].concat()).await;
    assert_eq!(
        h.unwrap(),
        ProxyHeader::Proxied {
            source: "192.0.2.1:51234".parse().unwrap(),
            destination: "198.51.100.2:1883".parse().unwrap(),
        }
    );
    assert_eq!(rest, b"\x10");
    let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let body6 = [
        &src.octets()[..],
        &dst.octets(),
        &4000u16.to_be_bytes(),
        &8883u16.to_be_bytes(),
    ]
    .concat();
    let (h, _) = read(&v2(1, 0x21, &body6)).await;
    assert_eq!(
        h.unwrap(),
        ProxyHeader::Proxied {
            source: "[2001:db8::1]:4000".parse().unwrap(),
            destination: "[2001:db8::2]:8883".parse().unwrap(),
        }
    );
    // LOCAL (health check), with or without addresses: its body is skipped entirely.
    let (h, rest) = read(&[v2(0, 0x00, &[]), b"x".to_vec()].concat()).await;
    assert_eq!(h.unwrap(), ProxyHeader::Local);
    assert_eq!(rest, b"x");
    let (h, _) = read(&v2(0, 0x11, &body4)).await;
    assert_eq!(h.unwrap(), ProxyHeader::Local);
    // AF_UNSPEC and AF_UNIX: relayed, but no address we can use.
    let (h, _) = read(&v2(1, 0x00, &[])).await;
    assert_eq!(h.unwrap(), ProxyHeader::Unknown);
    let (h, _) = read(&v2(1, 0x31, &[0u8; 216])).await;
    assert_eq!(h.unwrap(), ProxyHeader::Unknown);
}

#[tokio::test]
async fn v2_malformed_and_missing() {
    // Addresses shorter than the family needs.
    let (h, _) = read(&v2(1, 0x11, &[1, 2, 3])).await;
    assert!(matches!(h, Err(ProxyError::Malformed(_))), "{h:?}");
    let (h, _) = read(&v2(1, 0x21, &[0; 12])).await;
    assert!(matches!(h, Err(ProxyError::Malformed(_))), "{h:?}");
    // Wrong version, unknown command, datagram transport.
    let mut wrong = v2(1, 0x11, &[0; 12]);
    wrong[12] = 0x11;
    assert!(matches!(
        read(&wrong).await.0,
        Err(ProxyError::Malformed(_))
    ));
    assert!(matches!(
        read(&v2(2, 0x11, &[0; 12])).await.0,
        Err(ProxyError::Malformed(_))
    ));
    assert!(matches!(
        read(&v2(1, 0x12, &[0; 12])).await.0,
        Err(ProxyError::Malformed(_))
    ));
    // A length over the cap is refused before anything more is read.
    let mut huge = v2(1, 0x11, &[]);
    huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
    assert!(matches!(read(&huge).await.0, Err(ProxyError::Malformed(_))));
    // Not a header at all: an MQTT CONNECT, TLS ClientHello, HTTP request.
    for bytes in [
        &b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /mqtt HTTP/1.1\r\n",
        b"\r\n\r\n\0\r\nQXXXX\n\x21\x11\x00\x00",
    ] {
        assert!(matches!(read(bytes).await.0, Err(ProxyError::Missing)));
    }
    // Cut short.
    assert!(matches!(
        read(b"PROXY TCP4 1.2").await.0,
        Err(ProxyError::Io(_))
    ));
    assert!(matches!(
        read(&v2(1, 0x11, &[0; 12])[..20]).await.0,
        Err(ProxyError::Io(_))
    ));
}
