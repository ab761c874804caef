"""The table of addresses no skill or webhook may reach, and some they may.

One table for every sender that goes through the address guard: the webhook guard's own
tests (tests/unit/test_webhook_url_guard.py) and the http skill, mcp-http skill and webhook
delivery tests (tests/integration/test_skill_egress.py). Add a case here and every sender
is tested against it.
"""

TEREDO_PRIVATE = "2001:0:4136:e378:8000:63bf:f5ff:fffe"  # client 10.0.0.1
TEREDO_PUBLIC = "2001:0:4136:e378:8000:63bf:f7f7:f7f7"  # client 8.8.8.8

# (address, what the message must call it, refused even with allow_insecure)
REFUSED = [
    # IPv4
    ("10.0.0.5", "a private address", False),
    ("10.255.255.255", "a private address", False),
    ("172.16.0.1", "a private address", False),
    ("172.31.255.255", "a private address", False),
    ("192.168.1.1", "a private address", False),
    ("127.0.0.1", "a loopback address", False),
    ("127.255.255.254", "a loopback address", False),
    ("169.254.169.254", "the cloud metadata address", True),
    ("169.254.170.2", "the AWS ECS task metadata address", True),
    ("100.100.100.200", "the Alibaba Cloud metadata address", True),
    ("192.0.0.192", "the Oracle Cloud metadata address", True),
    ("168.63.129.16", "the Azure platform (WireServer) address", True),
    ("169.254.1.1", "a link-local address", True),
    ("100.64.0.1", "a carrier-grade NAT (shared) address", True),
    ("100.127.255.254", "a carrier-grade NAT (shared) address", True),
    ("0.0.0.0", "the unspecified address", True),
    ("0.1.2.3", "a 'this network' address", True),
    ("224.0.0.1", "a multicast address", True),
    ("239.255.255.250", "a multicast address", True),
    ("255.255.255.255", "the broadcast address", True),
    ("240.0.0.1", "a reserved address", True),
    ("192.0.0.8", "an IETF protocol assignment address", True),
    ("192.0.2.1", "a documentation address", True),
    ("198.51.100.1", "a documentation address", True),
    ("203.0.113.1", "a documentation address", True),
    ("198.18.0.1", "a benchmarking address", True),
    ("192.88.99.1", "a deprecated 6to4 relay address", True),
    # IPv6
    ("::1", "a loopback address", False),
    ("::", "the unspecified address", True),
    ("fc00::1", "a private (unique local) address", False),
    ("fd12:3456:789a::1", "a private (unique local) address", False),
    ("fe80::1", "a link-local address", True),
    ("fe80::1%eth0", "a link-local address", True),
    ("fd00:ec2::254", "the cloud metadata address", True),
    ("ff02::1", "a multicast address", True),
    ("fec0::1", "a deprecated site-local address", True),
    ("2001:db8::1", "a documentation address", True),
    ("2001:2::1", "an IETF protocol assignment address", True),
    ("100::1", "a discard-only address", True),
    ("400::1", "not a globally routable address", True),
    # IPv4 inside IPv6
    ("::ffff:127.0.0.1", "an IPv4-mapped address of 127.0.0.1, a loopback address", False),
    ("::ffff:10.0.0.5", "an IPv4-mapped address of 10.0.0.5, a private address", False),
    ("::ffff:169.254.169.254", "mapped address of 169.254.169.254, the cloud metadata", True),
    ("::127.0.0.1", "an IPv4-compatible address embedding 127.0.0.1, a loopback address", True),
    ("::8.8.8.8", "an IPv4-compatible address (deprecated)", True),
    ("::ffff:0:10.0.0.1", "an IPv4-translated address embedding 10.0.0.1, a private", True),
    ("64:ff9b::10.0.0.1", "a NAT64 address embedding 10.0.0.1, a private address", True),
    ("64:ff9b::169.254.169.254", "NAT64 address embedding 169.254.169.254, the cloud", True),
    ("64:ff9b::127.0.0.1", "a NAT64 address embedding 127.0.0.1, a loopback address", True),
    ("64:ff9b:1::1", "a local-use NAT64 address", True),
    ("64:ff9b:1::808:808", "a local-use NAT64 address", True),
    ("2002:a00:1::1", "a 6to4 address embedding 10.0.0.1, a private address", True),
    ("2002:7f00:1::", "a 6to4 address embedding 127.0.0.1, a loopback address", True),
    ("2002:a9fe:a9fe::", "6to4 address embedding 169.254.169.254, the cloud metadata", True),
    (TEREDO_PRIVATE, "a Teredo address embedding 10.0.0.1, a private address", True),
    (TEREDO_PUBLIC, "a Teredo tunnelling address", True),
]

ACCEPTED = [
    ("8.8.8.8", "8.8.8.8"),
    ("1.1.1.1", "1.1.1.1"),
    ("93.184.216.34", "93.184.216.34"),
    ("100.63.255.255", "100.63.255.255"),  # just below CGNAT
    ("100.128.0.0", "100.128.0.0"),  # just above CGNAT
    ("172.15.255.255", "172.15.255.255"),  # just outside 172.16/12
    ("172.32.0.1", "172.32.0.1"),
    ("192.169.0.1", "192.169.0.1"),
    ("169.255.0.1", "169.255.0.1"),
    ("2606:4700:4700::1111", "2606:4700:4700::1111"),
    ("2a00:1450:4001:80b::200e", "2a00:1450:4001:80b::200e"),
    ("2606:4700:4700:0:0:0:0:1111", "2606:4700:4700::1111"),  # normalised
    ("::ffff:8.8.8.8", "8.8.8.8"),  # the same host as 8.8.8.8; connect by IPv4
    ("64:ff9b::8.8.8.8", "64:ff9b::808:808"),  # DNS64 synthesis for an IPv4-only host
    ("2002:808:808::1", "2002:808:808::1"),  # 6to4 of a public address
]

# (URL with an IP literal, what the message must say): judged without DNS
LITERAL_URLS = [
    ("https://10.0.0.5/hook", "points at 10.0.0.5, a private address"),
    ("https://127.0.0.1/", "points at 127.0.0.1, a loopback address"),
    ("https://169.254.169.254/latest/meta-data/", "the cloud metadata address"),
    ("https://[::1]/", "points at ::1, a loopback address"),
    ("https://[::ffff:127.0.0.1]/", "IPv4-mapped address of 127.0.0.1"),
    ("https://[::ffff:7f00:1]/", "IPv4-mapped address of 127.0.0.1"),
    ("https://[fd00:ec2::254]/", "the cloud metadata address"),
    ("https://[fe80::1%25eth0]/", "a link-local address"),
    ("https://[64:ff9b::a9fe:a9fe]/", "embedding 169.254.169.254"),
    ("https://0.0.0.0:8080/", "the unspecified address"),
    ("https://10.0.0.5./hook", "points at 10.0.0.5, a private address"),
]

NON_STANDARD_NUMERIC_HOSTS = [
    "0177.0.0.1",  # octal
    "2130706433",  # one decimal number
    "0x7f.0.0.1",  # hex
    "0x7f000001",
    "127.1",  # shortened
    "017700000001",
    "10.0.0.010",  # a leading zero changes the meaning to octal
    "example.123",  # ends in a number, so URL parsers read it as IPv4
    "0x",
]
