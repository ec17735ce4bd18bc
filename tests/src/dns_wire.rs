//! DNS questions and answers on the wire, as far as tests and benchmarks need them: an A or
//! AAAA question for a name, and whether a reply answers it (ID, response bit, code, an
//! address).

/// A DNS question for `name`, type A, class IN, recursion desired, with ID `id`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    query_type(id, name, 1)
}

/// The same for type AAAA.
pub fn query_aaaa(id: u16, name: &str) -> Vec<u8> {
    query_type(id, name, 28)
}

fn query_type(id: u16, name: &str, qtype: u8) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, qtype, 0, 1]);
    q
}

/// What a question must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// NOERROR with at least one answer.
    Address,
    /// NOERROR, answers or not (an AAAA question for a name with only an A record).
    NoError,
    NxDomain,
}

/// Whether `reply` answers question `id` as `expect` says.
pub fn answered(reply: &[u8], id: u16, expect: Expect) -> bool {
    if reply.len() < 12 || reply[0..2] != id.to_be_bytes() || reply[2] & 0x80 == 0 {
        return false;
    }
    let rcode = reply[3] & 0x0f;
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    match expect {
        Expect::Address => rcode == 0 && answers >= 1,
        Expect::NoError => rcode == 0,
        Expect::NxDomain => rcode == 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_laid_out_as_rfc_1035_says_and_replies_are_matched() {
        let q = query(0x1234, "a.bc.");
        assert_eq!(
            q,
            [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]
        );
        let mut reply = q.clone();
        reply[2] |= 0x80;
        assert!(!answered(&reply, 0x1234, Expect::Address), "no answer yet");
        reply[7] = 1;
        assert!(answered(&reply, 0x1234, Expect::Address));
        assert!(!answered(&reply, 0x1235, Expect::Address), "another ID");
        reply[3] = 3;
        assert!(answered(&reply, 0x1234, Expect::NxDomain));
        assert!(
            !answered(&q, 0x1234, Expect::NxDomain),
            "a question is no reply"
        );
    }
}
