package Cocaine::Response;
# A response with metadata, PSGI style (docs/perl.md): status, headers as a flat list of pairs,
# and a body of any form a handler may return (string, undef, ARRAY ref of chunks, CODE ref).
#
#   return Cocaine::Response->new(201, [ 'Content-Type' => 'text/plain' ], "created\n");
#
# The http-server driver answers with the status and headers; other drivers send the body alone.
use strict;
use warnings;
use Carp qw(croak);

sub new {
    my ($class, $status, $headers, $body) = @_;
    $headers //= [];
    croak "status must be an HTTP status (100 to 999)" unless defined $status && $status =~ /^\d{3}\z/ && $status >= 100;
    croak "headers must be an ARRAY ref of name => value pairs" unless ref $headers eq 'ARRAY' && @$headers % 2 == 0;
    return bless { status => 0 + $status, headers => $headers, body => $body }, $class;
}

sub status  { $_[0]{status} }
sub headers { $_[0]{headers} }
sub body    { $_[0]{body} }

1;
