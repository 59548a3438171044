package Cocaine::Link;
# The worker's end of its link to the engine (docs/protocol.md, "Transport"): a ZeroMQ DEALER
# connected to the pool's ROUTER (--endpoint ipc://...), or a stream link, a Unix stream socket the
# worker inherited (--endpoint fd:N), with no ZeroMQ in the worker at all.
#
# Both links offer the same methods:
#   send(\@frames)           send a batch of protocol messages
#   receive(\@into, $raw)    append each message that has arrived, without waiting: decoded (undef
#                            for one that is not a valid message), or its bytes if $raw; true if
#                            anything arrived
#   wait_readable($seconds)  after a receive found nothing: wait until something may have arrived
#   gone                     undef while the link works; once it is over, '' if the engine closed
#                            it, else what broke it (bytes that are not msgpack, say)
#   close
use strict;
use warnings;
use Exporter 'import';

our @EXPORT_OK = qw(open_link);

# $tail: a scalar, shared if threads read the link, for the bytes of a message cut short on a
# stream link (docs/protocol.md: a message may be split across reads).
sub open_link {
    my ($endpoint, $id, $tail) = @_;
    if ($endpoint =~ /\Afd:(\d+)\z/) {
        require Cocaine::Link::Stream;
        return Cocaine::Link::Stream->new($1, $tail);
    }
    die "cocaine-perl-worker: --endpoint: '$endpoint' is neither fd:N nor a ZeroMQ endpoint\n" if $endpoint =~ /\Afd:/;
    require Cocaine::Link::ZeroMQ;    # loads libzmq only for a ZeroMQ link
    return Cocaine::Link::ZeroMQ->new($endpoint, $id);
}

1;
