package Cocaine::Link::ZeroMQ;
# A ZeroMQ DEALER whose identity is the worker id, one protocol message per frame (see Link.pm).
use strict;
use warnings;
use ZMQ::FFI;
use ZMQ::FFI::Constants qw(ZMQ_DEALER);
use Cocaine::Protocol qw(decode);

sub new {
    my ($class, $endpoint, $id) = @_;
    my $context = ZMQ::FFI->new;
    my $socket  = $context->socket(ZMQ_DEALER);
    $socket->set_identity($id);
    $socket->set_linger(1000);    # time for the last replies (or the load failure) to reach the engine
    $socket->connect($endpoint);
    return bless { context => $context, socket => $socket, fd => $socket->get_fd }, $class;
}

sub send {
    my ($self, $frames) = @_;
    $self->{socket}->send_multipart($frames);
}

sub receive {
    my ($self, $into, $raw) = @_;
    my $socket   = $self->{socket};
    my $received = 0;
    while ($socket->has_pollin) {
        my @frames = $socket->recv_multipart;
        push @$into, $raw ? @frames : map { decode($_) } @frames;
        $received = 1;
    }
    return $received;
}

# The ZeroMQ descriptor only signals that something may have changed, and only once has_pollin
# (in receive) said that nothing is there.
sub wait_readable {
    my ($self, $timeout) = @_;
    vec(my $readable = '', $self->{fd}, 1) = 1;
    select($readable, undef, undef, $timeout > 0 ? $timeout : 0);
}

sub gone { undef }    # over ZeroMQ the engine's absence shows only as silence

sub close {
    my ($self) = @_;
    $self->{socket}->close;
}

1;
