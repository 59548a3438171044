package Cocaine::Request;
# What a Perl handler receives: one job's request (docs/perl.md).
#
#   $request->body    the whole body (for a streamed request, waits for all of it)
#   $request->read    the next chunk, undef when none is left
#   $request->meta    the driver's metadata, a hash ref (also $request->{meta})
#   $request->task, $request->id
use strict;
use warnings;

sub new {
    my ($class, $worker, $job) = @_;
    return bless { id => $job->{id}, task => $job->{task}, meta => $job->{meta}, _worker => $worker, _job => $job },
        $class;
}

sub id   { $_[0]{id} }
sub task { $_[0]{task} }
sub meta { $_[0]{meta} }

# A whole request is one chunk (none if the body is empty); a streamed one arrives chunk by chunk.
sub read {
    my ($self) = @_;
    return $self->{_worker}->next_chunk($self->{_job});
}

# Everything read() has not returned yet, as one string.
sub body {
    my ($self) = @_;
    unless (exists $self->{_body}) {
        my $body = '';
        while (defined(my $chunk = $self->read)) { $body .= $chunk }
        $self->{_body} = $body;
    }
    return $self->{_body};
}

package Cocaine::Aborted;
# Thrown by read() and body() of a streamed request that the engine cancelled (its client gave up)
# or that the worker is stopping; the worker answers the job with the cancel's code and message.
use overload '""' => sub { "the job was cancelled\n" }, fallback => 1;
sub new { bless {}, shift }

1;
