# The conformance app in Perl: the tasks every language's app has (../README.md).
use strict;
use warnings;
use POSIX ();
use Cocaine::Response;

sub echo {
    my ($request) = @_;
    return $request->body;
}

sub chunks {
    my @left = qw(a b c);
    return sub { shift @left };    # a code ref streams: called until it returns undef
}

sub fail {
    my ($request) = @_;
    die "bad input: " . $request->body . "\n";
}

sub crash {
    POSIX::_exit(7);    # the worker process dies in the middle of the job
}

sub slow {
    my ($request) = @_;
    select(undef, undef, undef, $request->body / 1000);    # the milliseconds in the body
    return "slept " . $request->body;
}

sub hang {
    sleep 1 while 1;    # a handler that never returns: the heartbeat timeout ends it
}

sub tick {
    my ($request) = @_;
    return "tick $request->{meta}{tick}";
}

sub upper {
    my ($request) = @_;
    return uc $request->body;
}

# Each chunk of a streamed request goes back as a response chunk as soon as it arrives.
sub stream {
    my ($request) = @_;
    return sub { $request->read };
}

# Answers with response metadata (status 201, two headers) and what the request's HTTP metadata says.
sub respond {
    my ($request) = @_;
    my $meta = $request->meta;
    return Cocaine::Response->new(201, [ 'content-type' => 'text/plain', 'x-conformance' => 'yes' ],
        "$meta->{method} $meta->{path}?$meta->{query} $meta->{headers}{'x-test'} $meta->{peer}");
}

# Streams as many bytes as the body says (a decimal number) in chunks of 64 KiB, as fast as it can:
# faster than its client reads, so the engine's grants pace it.
sub flood {
    my ($request) = @_;
    my $left  = 0 + $request->body;
    my $chunk = 'x' x 65536;
    return sub {
        return undef if $left <= 0;
        my $piece = $left < length $chunk ? substr($chunk, 0, $left) : $chunk;
        $left -= length $piece;
        return $piece;
    };
}
