package Cocaine::Protocol;
# The engine <-> worker protocol, version 1 (docs/protocol.md): message types, decoding what the
# engine sends, and encoding what a worker sends.
#
# The frames a worker sends are encoded by hand. Data::MessagePack packs every Perl string alike
# (all bin, or with ->utf8 all str) while the protocol wants chunks as bin and text as str, and it
# packs integers above 2**31 as floats unless asked otherwise. Each frame is a line or a few, and they
# match tests/vectors/protocol.json byte for byte.
use strict;
use warnings;
use Data::MessagePack;
use Encode ();
use Exporter 'import';

use constant {
    PROTOCOL_VERSION => 1,
    MSG_HELLO     => 1,
    MSG_HEARTBEAT => 2,
    MSG_TERMINATE => 3,
    MSG_INVOKE    => 4,
    MSG_CHUNK     => 5,
    MSG_END       => 6,
    MSG_ERROR     => 7,
    MSG_LOG       => 8,
    MSG_CREDIT    => 9,
    MSG_META      => 10,
    MSG_HANDBACK  => 11,
    MSG_OPTIONS   => 12,
    MSG_GRANT     => 13,
    MSG_REPLY     => 14,
    RESPONSE_WINDOW => 256 * 1024,    # bytes of a job's response it may send beyond the engine's grants
};

our @EXPORT_OK = qw(PROTOCOL_VERSION MSG_HELLO MSG_HEARTBEAT MSG_TERMINATE MSG_INVOKE MSG_CHUNK MSG_END MSG_ERROR MSG_LOG
    MSG_CREDIT MSG_META MSG_HANDBACK MSG_OPTIONS MSG_GRANT RESPONSE_WINDOW decode message hello_frame heartbeat_frame chunk_frame
    end_frame error_frame log_frame credit_frame meta_frame handback_frame bytes_of end_as_reply);

my $unpacker = Data::MessagePack->new;

# One frame -> an array ref whose first element is the message type; undef if it is not one.
sub decode {
    my ($frame) = @_;
    return message(eval { $unpacker->unpack($frame) });
}

# A decoded msgpack value -> itself if it is a message (an array whose first element is the message
# type), else undef.
sub message {
    my ($value) = @_;
    return undef unless ref $value eq 'ARRAY' && @$value && defined $value->[0] && $value->[0] =~ /^\d+\z/;
    return $value;
}

# The bytes to send for a chunk: character strings go out as UTF-8.
sub bytes_of {
    my ($data) = @_;
    return $data unless utf8::is_utf8($data);
    return Encode::encode('UTF-8', $data);
}

# Valid UTF-8 for a msgpack str: the engine drops a frame whose text is not (a die message may
# carry any bytes of the request, say).
sub _text {
    my ($text) = @_;
    return Encode::encode('UTF-8', $text) if utf8::is_utf8($text);
    my $copy = $text;
    return Encode::encode('UTF-8', Encode::decode('UTF-8', $copy, Encode::FB_DEFAULT));
}

sub _uint {
    my ($n) = @_;
    return chr($n) if $n < 0x80;
    return pack('CC', 0xcc, $n) if $n <= 0xff;
    return pack('Cn', 0xcd, $n) if $n <= 0xffff;
    return pack('CN', 0xce, $n) if $n <= 0xffffffff;
    return pack('CQ>', 0xcf, $n);
}

sub _bin {
    my ($bytes) = @_;
    my $n = length $bytes;
    return pack('CC', 0xc4, $n) . $bytes if $n <= 0xff;
    return pack('Cn', 0xc5, $n) . $bytes if $n <= 0xffff;
    return pack('CN', 0xc6, $n) . $bytes;
}

sub _str {
    my $bytes = _text($_[0]);
    my $n = length $bytes;
    return chr(0xa0 | $n) . $bytes if $n < 32;
    return pack('CC', 0xd9, $n) . $bytes if $n <= 0xff;
    return pack('Cn', 0xda, $n) . $bytes if $n <= 0xffff;
    return pack('CN', 0xdb, $n) . $bytes;
}

sub _array {
    my ($n) = @_;
    return chr(0x90 | $n) if $n < 16;
    return pack('Cn', 0xdc, $n) if $n <= 0xffff;
    return pack('CN', 0xdd, $n);
}

# fixarray headers: 0x90 | number of elements
sub hello_frame     { "\x93" . _uint(MSG_HELLO) . _uint(PROTOCOL_VERSION) . _uint($$) }
sub heartbeat_frame { "\x91" . _uint(MSG_HEARTBEAT) }
sub chunk_frame     { "\x93" . _uint(MSG_CHUNK) . _uint($_[0]) . _bin(bytes_of($_[1])) }
sub end_frame       { "\x92" . _uint(MSG_END) . _uint($_[0]) }
sub error_frame     { "\x94" . _uint(MSG_ERROR) . _uint($_[0]) . _uint($_[1]) . _str($_[2]) }
sub log_frame       { "\x93" . _uint(MSG_LOG) . _uint($_[0]) . _str($_[1]) }
sub credit_frame    { "\x93" . _uint(MSG_CREDIT) . _uint($_[0]) . _uint($_[1]) }
sub handback_frame  { "\x92" . _uint(MSG_HANDBACK) . _array(scalar @_) . join('', map { _uint($_) } @_) }

# [10, job, {"status": S, "headers": [[name, value], ...]}]: the keys in that order (a fixmap of 2)
sub meta_frame {
    my ($job, $status, @headers) = @_;
    my $frame = "\x93" . _uint(MSG_META) . _uint($job) . "\x82" . _str('status') . _uint($status) . _str('headers')
        . _array(@headers / 2);
    while (my ($name, $value) = splice @headers, 0, 2) {
        $frame .= "\x92" . _str($name) . _str($value);
    }
    return $frame;
}

# A job's end, when the last frame queued (\@out) is that job's chunk: the chunk becomes a reply
# [14, job, data], the same bytes with another message type, and no end follows. False otherwise.
sub end_as_reply {
    my ($out, $job) = @_;
    return 0 unless @$out;
    my $prefix = "\x93" . _uint(MSG_CHUNK) . _uint($job);
    return 0 unless substr($out->[-1], 0, length $prefix) eq $prefix;
    substr($out->[-1], 1, 1) = _uint(MSG_REPLY);
    return 1;
}

1;
