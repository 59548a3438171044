package Cocaine::Worker;
# A Perl worker: loads the app file, then serves the engine's jobs over the worker protocol
# (docs/protocol.md) until told to stop. Handlers run one at a time, in arrival order.
#
# Handback (docs/pools.md): a watchdog thread, started before the app loads (so that it clones
# little), hands the engine back the whole requests queued behind a job that has run past the
# engine's handback-after. The main loop numbers the whole requests it queues and lists their ids
# in $queued. To start number n it checks, under $guard, that the watchdog has not handed back up
# to n, and says so in $running; the watchdog, under $guard, hands back every number above the one
# running: a job is either started or handed back, never both. The main loop holds $guard all the
# time except while a handler's own code runs (which takes it for each call into the runtime), so
# the watchdog uses the link (Cocaine::Link) only then; on a stream link a message cut short
# waits in $link_tail for the rest, whichever of the two read it. Shared variables are slow in
# Perl: the main loop takes $guard once per job and touches two of them.
use strict;
use warnings;
use threads;
use threads::shared;
use Scalar::Util qw(blessed);
use Time::HiRes qw(time);
use Cocaine::Link qw(open_link);
use Cocaine::Protocol qw(MSG_INVOKE MSG_CHUNK MSG_END MSG_ERROR MSG_TERMINATE MSG_OPTIONS MSG_GRANT RESPONSE_WINDOW decode
    hello_frame heartbeat_frame chunk_frame end_frame error_frame log_frame credit_frame meta_frame handback_frame bytes_of
    end_as_reply);
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
    # Without a job for this long, the handback watchdog stops looking every handback-after and
    # sleeps until a job starts: a busy worker never pays a thread wake-up per job.
    WATCHDOG_PARK_AFTER  => 1,
};

# Shared by the main loop and the watchdog (see the top).
my $guard :shared;
my $queued :shared = '';          # ids (packed Q>) of whole requests numbered $queued_base + 1, + 2, ...
my $queued_base :shared = 0;
my $handed_upto :shared = 0;      # every whole request numbered up to this and not started went back
my $running :shared = '';         # pack('dQ>', start time, number of the last whole request started)
my $handback_after :shared = 0;   # seconds, once the engine offered handback
my $replies = 0;                  # the engine takes a last chunk and its end as one reply (offered)
my @stash :shared;                # frames the watchdog read and did not hand back, for the main loop
my $heard :shared = 0;            # when the watchdog last read from the engine
my $parked :shared = 0;           # the watchdog waits for a job to start
my $closing :shared = 0;
my $link_tail :shared = '';      # the bytes of a message cut short on a stream link
my $watchdog;

# Exit when the daemon dies, even by SIGKILL: no orphan workers. FFI::Platypus (ZMQ::FFI's
# dependency) reaches prctl(2) without a compiler.
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
    my $link = open_link($args{endpoint}, $args{id}, \$link_tail);
    $watchdog = threads->create(\&watch, $link);
    my $worker = Cocaine::Worker->new(link => $link, heartbeat => $args{heartbeat});
    my $reason = load_app($args{path});
    if (defined $reason) {
        print STDERR "app $args{app}: $reason\n";
        $worker->{out} = [ log_frame(LOG_ERROR, $reason) ];
        $worker->flush;
        stop_watchdog();
        $link->close;
        return EXIT_LOAD_FAILED;
    }
    my $status = $worker->serve;
    stop_watchdog();
    $link->close;
    return $status;
}

# Also when a handler calls exit: a thread left running would make perl complain as it exits.
END { stop_watchdog() if threads->tid == 0 }

sub stop_watchdog {
    return unless $watchdog;
    {
        lock($guard);
        $closing = 1;
        cond_signal($guard);
    }
    $watchdog->join;
    $watchdog = undef;
}

# The watchdog thread: once a job has run past handback-after, hand back what waits behind it, and
# again every handback-after while it runs (the engine may have sent more before it saw the stall).
sub watch {
    my ($link) = @_;
    lock($guard);
    my $idle_since = time;
    until ($closing) {
        my ($started) = $running eq '' ? (0) : unpack('dQ>', $running);
        if (!$handback_after || (!$started && time - $idle_since >= WATCHDOG_PARK_AFTER)) {
            $parked = 1;    # the first job after a wait wakes it; a second at most if that was missed
            cond_timedwait($guard, time + WATCHDOG_PARK_AFTER);
            $idle_since = time if $running ne '';
        } elsif (!$started) {
            cond_timedwait($guard, time + $handback_after);
        } elsif (time < $started + $handback_after) {
            cond_timedwait($guard, $started + $handback_after);
        } else {
            hand_back($link);
            cond_timedwait($guard, time + $handback_after);
        }
        $idle_since = time if $running ne '';
    }
}

# Hold $guard. The whole requests queued, and those still in the link, go back to the engine in a
# message of their own; what else the link held waits in @stash for the main loop. A streamed
# request stays: its chunks came here and cannot be sent again.
sub hand_back {
    my ($link) = @_;
    my (undef, $last) = unpack('dQ>', $running);
    my $from = $last > $handed_upto ? $last : $handed_upto;    # up to here: started, or gone already
    my $base = $queued_base;
    my @ids = unpack('(Q>)*', substr($queued, ($from - $base) * 8));
    $handed_upto = $base + length($queued) / 8;
    my @frames;
    $heard = time if $link->receive(\@frames, 'raw');
    for my $frame (@frames) {
        my $message = decode($frame);
        if ($message && $message->[0] == MSG_INVOKE && @$message >= 6 && $message->[5]) {
            push @ids, $message->[1];
        } else {
            push @stash, $frame;
        }
    }
    $link->send([ handback_frame(@ids) ]) if @ids;
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
        link       => $args{link},
        heartbeat  => $args{heartbeat},
        out        => [],    # frames of the next message
        queue      => [],    # jobs not started yet, in arrival order
        jobs       => {},    # queued or running jobs by id
        numbered   => 0,     # whole requests queued so far (handback: see the top)
        started    => 0,     # the number of the last whole request started
        fresh      => '',    # ids of whole requests queued, not published yet
        woke       => 0,     # the loop waited for the engine since the last job started
        base       => 0,     # $queued_base, which only this loop changes
        running    => 0,     # $running is set
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
    while (my $job = $self->next_job) {
        $self->run($job);
        delete $self->{jobs}{ $job->{id} };
    }
    $self->flush;
    return 0;
}

# The next job to run, claimed (undef once the worker must stop): between handlers the loop holds
# $guard, for everything it does until the next one starts.
sub next_job {
    my ($self) = @_;
    lock($guard);
    while (!$self->{stopping}) {
        my $job = shift @{ $self->{queue} };
        unless ($job) {
            if ($self->{running}) {
                $running = '';    # idle: nothing waits behind a job
                $self->{running} = 0;
            }
            $self->pump;
            next;
        }
        return $job if $self->claim($job);
        delete $self->{jobs}{ $job->{id} };    # handed back: the engine's again
    }
    return undef;
}

# Mark the job started, unless the watchdog handed it back (then it is the engine's again, and
# this worker forgets it). Hold $guard.
sub claim {
    my ($self, $job) = @_;
    if (my $number = $job->{number}) {
        return 0 if $number <= $handed_upto;
        $self->{started} = $number;
    }
    $running = pack('dQ>', time, $self->{started});
    $self->{running} = 1;
    if ($self->{woke}) {    # the first job after a wait: the watchdog may be asleep
        $self->{woke} = 0;
        if ($parked) {
            $parked = 0;
            cond_signal($guard);
        }
    }
    return 1;
}

# Hold $guard. The ids of the whole requests just queued become visible to the watchdog; those
# started or handed back leave $queued.
sub publish {
    my ($self) = @_;
    # Trimmed now and then, not on every read: each touch of a shared variable costs.
    if ($self->{started} - $self->{base} >= 64 || !@{ $self->{queue} }) {
        my $done = ($self->{started} > $handed_upto ? $self->{started} : $handed_upto) - $self->{base};
        if ($done > 0) {
            substr($queued, 0, $done * 8, '');
            $queued_base = $self->{base} += $done;
        }
    }
    if (length $self->{fresh}) {
        $queued .= $self->{fresh};
        $self->{fresh} = '';
    }
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
        push @{ $self->{out} }, end_frame($job->{id}) unless $replies && end_as_reply($self->{out}, $job->{id});
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

# A job whose response has no credit left waits for the engine's grant, pumping the link (its
# client is behind); a chunk may overdraw the credit.
sub write_chunk {
    my ($self, $job, $chunk) = @_;
    die "handler produced a " . ref($chunk) . " reference; expected a string\n" if ref $chunk;
    $self->wait_while(sub { $job->{credit} <= 0 && !$job->{cancelled} }) if $job->{credit} <= 0;
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

# The next chunk of a job's request, pumping the link while the engine still streams it; each
# chunk taken of a streamed request is credited to the engine (flow control).
sub next_chunk {
    my ($self, $job) = @_;
    $self->wait_while(sub { !@{ $job->{chunks} } && !$job->{closed} }) if !@{ $job->{chunks} } && !$job->{closed};
    cancel($job, UNAVAILABLE, "the worker is stopping") if !@{ $job->{chunks} } && !$job->{closed};
    die Cocaine::Aborted->new if $job->{cancelled};
    my $chunk = shift @{ $job->{chunks} };
    push @{ $self->{out} }, credit_frame($job->{id}, length $chunk) if defined $chunk && $job->{streamed};
    return $chunk;
}

# Pump the link while the running handler waits for the engine ($waiting: its request's next
# chunk, or a grant for its response) and the worker is not stopping. The main loop reads the
# link here, so it hands back itself what waits behind a long job, as the watchdog would.
sub wait_while {
    my ($self, $waiting) = @_;
    lock($guard);
    my $started = $running eq '' ? time : (unpack('dQ>', $running))[0];
    while ($waiting->() && !$self->{stopping}) {
        $self->pump;
        if ($handback_after && time >= $started + $handback_after) {
            hand_back($self->{link});
            $self->apply_stash;
            $self->publish;
        }
    }
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
    return unless @{ $self->{out} };
    lock($guard);
    $self->send_out;
}

# Send what is pending. Hold $guard.
sub send_out {
    my ($self) = @_;
    my $out = $self->{out};
    return unless @$out;
    $self->{link}->send($out);
    $self->{out}       = [];
    $self->{last_sent} = $self->{batch_started} = time;
}

# Send what is pending, then read what the engine sent, waiting until a message arrives or the
# next heartbeat is due. Called when no job is runnable: the queue is empty, or a handler waits
# for request chunks. Hold $guard.
sub pump {
    my ($self) = @_;
    $self->send_out;
    my $link = $self->{link};
    $self->apply_stash;
    $self->publish;
    my @messages;
    my $heard = $link->receive(\@messages);
    unless ($heard) {
        $self->{woke} = 1;
        $link->wait_readable($self->{last_sent} + $self->{heartbeat} - time);
        $heard = $link->receive(\@messages);
    }
    $self->{last_heard} = time if $heard;    # even the start of a message is a sign of life
    $self->apply($_) for @messages;
    $self->publish;
    my $now = $self->{batch_started} = time;
    if (defined(my $why = $link->gone)) {    # the engine closed the stream link, or broke it
        print STDERR "cocaine-perl-worker: $why; stopping\n" if length $why;
        $self->{stopping} = 1;
    } elsif ($now - $self->{last_heard} > ENGINE_SILENCE_LIMIT * $self->{heartbeat}) {
        $self->{stopping} = 1;    # the engine is gone
    } elsif ($now - $self->{last_sent} >= $self->{heartbeat}) {
        push @{ $self->{out} }, heartbeat_frame();
        $self->send_out;
    }
}

# What the watchdog read while a handler ran, in order, before anything newer. Hold $guard.
sub apply_stash {
    my ($self) = @_;
    return unless @stash;
    my @frames = @stash;
    @stash = ();
    $self->{last_heard} = $heard;
    $self->apply(decode($_)) for @frames;
}

# Apply one message from the engine, decoded (undef if it was not one). Unknown types and extra
# elements are ignored, as the protocol asks, so that it can grow.
sub apply {
    my ($self, $message) = @_;
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
        if ($closed) {    # a handback candidate: numbered, published by the caller (publish)
            $job->{number} = ++$self->{numbered};
            $self->{fresh} .= pack('Q>', $id);
        }
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
    } elsif ($kind == MSG_OPTIONS) {
        my $reply = ref $message->[1] eq 'HASH' ? $message->[1]{reply} : undef;
        $replies = ref $reply && $reply ? 1 : 0;  # msgpack true, a boolean object; not 1
        my $after = ref $message->[1] eq 'HASH' ? $message->[1]{'handback-after'} : undef;
        $handback_after = $after if defined $after && !ref $after && $after =~ /\A[0-9.eE+-]+\z/ && $after > 0;
    }
}

1;
