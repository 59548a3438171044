package Cocaine::Link::Stream;
# A stream link (see Link.pm): protocol messages back to back on an inherited Unix stream socket,
# with no framing of their own (msgpack is self-delimiting). Reads never wait; writes block (the
# engine always reads) and raise no SIGPIPE: once the engine has closed its end, the next receive
# says so.
use strict;
use warnings;
use Data::MessagePack;
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use IO::Handle;
use Socket qw(MSG_DONTWAIT MSG_NOSIGNAL);
use Cocaine::Protocol qw(message);

use constant READ_SIZE => 256 * 1024;    # what one read may take

# An interpreter thread would copy the pointer to an unpacker's C state, share it, and free it as
# it ends: each thread makes its own instead (receive).
{
    no warnings 'once';
    *Data::MessagePack::Unpacker::CLONE_SKIP = sub { 1 } unless Data::MessagePack::Unpacker->can('CLONE_SKIP');
}

# $tail: where the bytes of a message cut short wait for the rest (see open_link).
sub new {
    my ($class, $fd, $tail) = @_;
    open(my $fh, '+<&=', $fd) or die "cocaine-perl-worker: --endpoint fd:$fd: cannot open descriptor $fd: $!\n";
    binmode $fh;
    $fh->blocking(1);
    my $own_tail = '';
    $tail //= \$own_tail;
    $$tail = '';
    return bless { fh => $fh, fd => $fd, tail => $tail, unpacker => undef, gone => undef }, $class;
}

sub send {
    my ($self, $frames) = @_;
    my $data = @$frames == 1 ? $frames->[0] : join('', @$frames);
    my ($fh, $sent, $size) = ($self->{fh}, 0, length $data);
    while ($sent < $size) {
        my $n = CORE::send($fh, $sent ? substr($data, $sent) : $data, MSG_NOSIGNAL);
        unless (defined $n) {
            next if $! == EINTR;
            return;    # the engine closed its end
        }
        $sent += $n;
    }
}

sub receive {
    my ($self, $into, $raw) = @_;
    my ($fh, $tail) = ($self->{fh}, $self->{tail});
    my $buffer = $$tail;
    my $had_tail = length $buffer;
    # Only bytes that are not msgpack, left by another thread, would make whole messages here.
    $buffer = $self->take_messages($buffer, $into, $raw) if $had_tail;
    my $received = 0;
    until (defined $self->{gone}) {
        my $data;
        unless (defined recv($fh, $data, READ_SIZE, MSG_DONTWAIT)) {
            next if $! == EINTR;
            $self->{gone} = "the engine's link failed: $!" unless $! == EAGAIN || $! == EWOULDBLOCK;
            last;
        }
        unless (length $data) {
            $self->{gone} = '';    # the engine closed its end
            last;
        }
        $received = 1;
        $buffer = $self->take_messages(length $buffer ? $buffer . $data : $data, $into, $raw);
        last if length $data < READ_SIZE;
    }
    $$tail = $buffer if length $buffer || $had_tail;
    return $received;
}

# Append the whole messages at the start of $buffer to @$into; returns what is left: the start of
# a message cut short or, once the link is gone, the bytes that are not msgpack (another thread
# that reads the link finds them again).
sub take_messages {
    my ($self, $buffer, $into, $raw) = @_;
    my $unpacker = $self->{unpacker};
    $unpacker = $self->{unpacker} = Data::MessagePack::Unpacker->new unless ref $unpacker eq 'Data::MessagePack::Unpacker';
    my ($offset, $size) = (0, length $buffer);
    while ($offset < $size) {
        my $end = eval { $unpacker->execute($buffer, $offset) };
        my $whole = defined $end && $unpacker->is_finished;
        if ($whole) {
            push @$into, $raw ? substr($buffer, $offset, $end - $offset) : message($unpacker->data);
        } elsif (!defined $end) {
            $self->{gone} = "the engine sent bytes that are not msgpack";
        }
        $unpacker->reset;    # also after a message cut short: once the rest arrives it is parsed whole
        last unless $whole;
        $offset = $end;
    }
    return substr($buffer, $offset);
}

sub wait_readable {
    my ($self, $timeout) = @_;
    vec(my $readable = '', $self->{fd}, 1) = 1;
    select($readable, undef, undef, $timeout > 0 ? $timeout : 0);
}

sub gone { $_[0]{gone} }

sub close {
    my ($self) = @_;
    CORE::close($self->{fh});
}

1;
