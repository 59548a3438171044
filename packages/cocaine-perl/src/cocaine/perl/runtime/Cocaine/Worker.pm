package Cocaine::Worker;
# A Perl worker: loads the app file, then serves the engine's jobs over the worker protocol
# (docs/protocol.md) until told to stop. Handlers run one at a time, in arrival order.
use strict;
use warnings;
use Scalar::Util qw(blessed);
use Time::HiRes qw(time);
use ZMQ::FFI;
use ZMQ::FFI::Constants qw(ZMQ_DEALER);
use Cocaine::Protocol qw(MSG_INVOKE MSG_CHUNK MSG_END MSG_ERROR MSG_TERMINATE MSG_GRANT RESPONSE_WINDOW decode hello_frame heartbeat_frame chunk_frame
    end_frame error_frame log_frame credit_frame meta_frame bytes_of);
use Cocaine::Request;
use Cocaine::Response;

use constant {
    APP_ERROR            => 502,
    TIMEOUT              => 504,
    UNAVAILABLE          => 503,
    LOG_ERROR            => 40,
    EXIT_LOAD_FAILED     => 3,
    ENGINE_SILENCE_LIMIT => 3,        # heartbeat intervals without a word from the engine
    BATCH_DELAY          => 0.001,    # seconds replies may wait for the rest of a batch
};

# Exit when the daemon dies, even by SIGKILL: no orphan workers. ZMQ::FFI brings FFI::Platypus,
# which reaches prctl(2) without a compiler.
sub die_with_parent {
    eval {
        require FFI::Platypus;
        my $ffi = FFI::Platypus->new(api => 1, lib => [undef]);
        $ffi->function(prctl => [ 'int', 'long', 'long', 'long', 'long' ] => 'int')->call(1, 9, 0, 0, 0);  # PR_SET_PDEATHSIG, SIGKILL
    };
    my $parent = $ENV{COCAINE_PARENT_PID};
    exit 1 if $parent && getppid() != $parent;    # the daemon died before the death signal was armed
}

sub main {
    my (%args) = @_;
    my $context = ZMQ::FFI->new;
    my $socket  = $context->socket(ZMQ_DEALER);
    $socket->set_identity($args{id});
    $socket->set_linger(1000);    # time for the last replies (or the load failure) to reach the engine
    $socket->connect($args{endpoint});
    my $worker = Cocaine::Worker->new(socket => $socket, heartbeat => $args{heartbeat});
    my $reason = load_app($args{path});
    if (defined $reason) {
        print STDERR "app $args{app}: $reason\n";
        $worker->{out} = [ log_frame(LOG_ERROR, $reason) ];
        $worker->flush;
        $socket->close;
        return EXIT_LOAD_FAILED;
    }
    my $status = $worker->serve;
    $socket->close;
    return $status;
}

# Compile the app file into package main, where its subs become the task handlers. Returns the
# reason it cannot load, or undef.
sub load_app {
    my ($path) = @_;
    return "cannot load $path: no such file" unless -f $path;
    (my $folder = $path) =~ s{/[^/]*\z}{};
    unshift @INC, $folder;    # the app may `use` the modules beside it
    my $error;
    {
        package main;
        do $path;
        $error = $@;
    }
    return undef unless $error;
    chomp $error;
    return "cannot load $path: $error";
}

sub handler_for {
    my ($task) = @_;
    return undef unless $task =~ /\A[A-Za-z_][A-Za-z0-9_]*\z/;
    no strict 'refs';
    return defined &{"main::$task"} ? \&{"main::$task"} : undef;
}

sub new {
    my ($class, %args) = @_;
    my $now = time;
    return bless {
        socket     => $args{socket},
        fd         => $args{socket}->get_fd,
        heartbeat  => $args{heartbeat},
        out        => [],    # frames of the next message
        queue      => [],    # jobs not started yet, in arrival order
        jobs       => {},    # queued or running jobs by id
        stopping   => 0,
        last_sent     => $now,
        last_heard    => $now,
        batch_started => $now,    # when the jobs whose replies are pending began to run
    }, $class;
}

sub serve {
    my ($self) = @_;
    push @{ $self->{out} }, hello_frame();
    $self->flush;
    while (!$self->{stopping}) {
        my $job = shift @{ $self->{queue} };
        unless ($job) {
            $self->pump;
            next;
        }
        $self->run($job);
        delete $self->{jobs}{ $job->{id} };
    }
    $self->flush;
    return 0;
}

# Every job gets exactly one end or error, even a cancelled one: the engine frees the job's credit
# on it.
sub run {
    my ($self, $job) = @_;
    if ($job->{cancelled}) {    # a streamed request given up before it started
        push @{ $self->{out} }, error_frame($job->{id}, @{ $job->{cancelled} });
        return;
    }
    my $deadline = ref $job->{meta} eq 'HASH' ? $job->{meta}{deadline} : undef;
    if (defined $deadline && time > $deadline) {
        push @{ $self->{out} }, error_frame($job->{id}, TIMEOUT, "deadline exceeded before the job started");
        return;
    }
    my $handler = handler_for($job->{task});
    unless ($handler) {
        push @{ $self->{out} }, error_frame($job->{id}, APP_ERROR, "the app has no callable '$job->{task}'");
        $self->flush;
        return;
    }
    # Replies to a batch of quick jobs leave together; after a slow handler they leave before the
    # next one starts.
    $self->flush if time - $self->{batch_started} > BATCH_DELAY;
    my $ok = eval {
        $self->respond($job, scalar $handler->(Cocaine::Request->new($self, $job)));
        1;
    };
    if ($ok) {
        push @{ $self->{out} }, end_frame($job->{id});
    } elsif (ref $@ eq 'Cocaine::Aborted' && $job->{cancelled}) {
        push @{ $self->{out} }, error_frame($job->{id}, @{ $job->{cancelled} });
    } else {
        my $message = describe_error($@);
        print STDERR "app error in task '$job->{task}' (job $job->{id}): $message\n";
        push @{ $self->{out} }, error_frame($job->{id}, APP_ERROR, $message);
    }
}

# A handler returns a string (one chunk), undef (none), an ARRAY ref (its chunks) or a CODE ref,
# called until it returns undef, each chunk sent as soon as it is produced; or a Cocaine::Response
# holding one of those, whose status and headers go first.
sub respond {
    my ($self, $job, $result) = @_;
    return unless defined $result;
    my $type = ref $result;
    if ($type eq 'Cocaine::Response') {
        push @{ $self->{out} }, meta_frame($job->{id}, $result->status, @{ $result->headers });
        $result = $result->body;
        return unless defined $result;
        $type = ref $result;
    }
    if ($type eq '') {
        $self->write_chunk($job, $result);
    } elsif ($type eq 'ARRAY') {
        $self->write_chunk($job, $_) for @$result;
    } elsif ($type eq 'CODE') {
        while (defined(my $chunk = $result->())) {
            $self->write_chunk($job, $chunk);
            $self->flush;
        }
    } else {
        die "handler returned a $type reference; expected a string, undef, an ARRAY or a CODE reference\n";
    }
}

# A job whose response has no credit left waits for the engine's grant, pumping the socket (its
# client is behind); a chunk may overdraw the credit.
sub write_chunk {
    my ($self, $job, $chunk) = @_;
    die "handler produced a " . ref($chunk) . " reference; expected a string\n" if ref $chunk;
    $self->pump while $job->{credit} <= 0 && !$job->{cancelled} && !$self->{stopping};
    cancel($job, UNAVAILABLE, "the worker is stopping") if $job->{credit} <= 0 && !$job->{cancelled};
    die Cocaine::Aborted->new if $job->{cancelled};
    my $bytes = bytes_of($chunk);
    $job->{credit} -= length $bytes;
    push @{ $self->{out} }, chunk_frame($job->{id}, $bytes);
}

# "message" for die "message\n"; "Class: message" for an exception object, as other languages do.
sub describe_error {
    my ($error) = @_;
    my $text = blessed($error) ? blessed($error) . ": $error" : "$error";
    chomp $text;
    return $text;
}

# The next chunk of a job's request, pumping the socket while the engine still streams it; each
# chunk taken of a streamed request is credited to the engine (flow control).
sub next_chunk {
    my ($self, $job) = @_;
    $self->pump while !@{ $job->{chunks} } && !$job->{closed} && !$self->{stopping};
    cancel($job, UNAVAILABLE, "the worker is stopping") if !@{ $job->{chunks} } && !$job->{closed};
    die Cocaine::Aborted->new if $job->{cancelled};
    my $chunk = shift @{ $job->{chunks} };
    push @{ $self->{out} }, credit_frame($job->{id}, length $chunk) if defined $chunk && $job->{streamed};
    return $chunk;
}

# The engine gave up on a streamed request: reads fail, and the job is answered with [code, message].
sub cancel {
    my ($job, $code, $message) = @_;
    $job->{closed}    = 1;
    $job->{cancelled} = [ $code, $message ];
    $job->{chunks}    = [];
}

sub flush {
    my ($self) = @_;
    my $out = $self->{out};
    return unless @$out;
    $self->{socket}->send_multipart($out);
    $self->{out}       = [];
    $self->{last_sent} = $self->{batch_started} = time;
}

# Send what is pending, then read what the engine sent, waiting until a message arrives or the
# next heartbeat is due. Called when no job is runnable: the queue is empty, or a handler waits
# for request chunks.
sub pump {
    my ($self) = @_;
    $self->flush;
    my $socket = $self->{socket};
    # The ZeroMQ descriptor only signals that something may have changed: ask has_pollin first.
    unless ($socket->has_pollin) {
        my $timeout = $self->{last_sent} + $self->{heartbeat} - time;
        vec(my $readable = '', $self->{fd}, 1) = 1;
        select($readable, undef, undef, $timeout > 0 ? $timeout : 0);
    }
    while ($socket->has_pollin) {
        my @frames = $socket->recv_multipart;
        $self->{last_heard} = time;
        $self->apply($_) for @frames;
    }
    my $now = $self->{batch_started} = time;
    if ($now - $self->{last_heard} > ENGINE_SILENCE_LIMIT * $self->{heartbeat}) {
        $self->{stopping} = 1;    # the engine is gone
    } elsif ($now - $self->{last_sent} >= $self->{heartbeat}) {
        push @{ $self->{out} }, heartbeat_frame();
        $self->flush;
    }
}

# Apply one message from the engine. Unknown types and extra elements are ignored, as the
# protocol asks, so that it can grow.
sub apply {
    my ($self, $frame) = @_;
    my $message = decode($frame);
    unless ($message) {
        print STDERR "cocaine-perl-worker: dropped a bad message from the engine\n";
        return;
    }
    my ($kind, $id) = @$message;
    if ($kind == MSG_INVOKE) {
        my (undef, undef, $task, $meta, $body, $closed) = @$message;
        my $job = {
            id        => $id,
            task      => $task,
            meta      => $meta // {},
            chunks    => [ defined $body && length $body ? $body : () ],
            closed    => $closed ? 1 : 0,
            streamed  => $closed ? 0 : 1,
            cancelled => undef,    # [code, message] once the engine gives up on a streamed request
            credit    => RESPONSE_WINDOW,    # bytes of response it may still send (grants add to it)
        };
        $self->{jobs}{$id} = $job;
        push @{ $self->{queue} }, $job;
    } elsif ($kind == MSG_CHUNK) {
        my $job = $self->{jobs}{$id};
        push @{ $job->{chunks} }, $message->[2] if $job && !$job->{closed};
    } elsif ($kind == MSG_END) {
        my $job = $self->{jobs}{$id} or return;
        $job->{closed} = 1;
    } elsif ($kind == MSG_ERROR) {    # a cancel concerns streamed requests, and responses waiting for credit
        my $job = $self->{jobs}{$id};
        cancel($job, $message->[2], $message->[3]) if $job && ($job->{streamed} || $job->{credit} <= 0);
    } elsif ($kind == MSG_GRANT) {
        my $job = $self->{jobs}{$id} or return;
        $job->{credit} += $message->[2];
    } elsif ($kind == MSG_TERMINATE) {
        $self->{stopping} = 1;
    }
}

1;
