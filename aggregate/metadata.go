package aggregate

import (
	"context"
	"maps"

	"github.com/redsource/redsource/eventstore"
)

// Metadata keys written by this package.
const (
	// MetaCorrelation: the ID shared by everything one request or workflow
	// caused.
	MetaCorrelation = "correlation_id"
	// MetaCausation: the ID of the message (command or event) that directly
	// caused this event.
	MetaCausation = "causation_id"
	// MetaSchema: the schema version of the event's data, decimal; absent
	// means 1. Reserved: metadata from the context may not set it.
	MetaSchema = "schema"
)

type metaKey struct{}

// WithMetadata returns a context whose Saves add key=value to the
// metadata of every event they append. An empty value removes the key.
// The key MetaSchema is reserved: Save refuses a context that sets it.
func WithMetadata(ctx context.Context, key, value string) context.Context {
	m := maps.Clone(metadata(ctx))
	if m == nil {
		m = map[string]string{}
	}
	if value == "" {
		delete(m, key)
	} else {
		m[key] = value
	}
	return context.WithValue(ctx, metaKey{}, m)
}

// WithCorrelation sets the correlation ID of the events saved under ctx.
func WithCorrelation(ctx context.Context, id string) context.Context {
	return WithMetadata(ctx, MetaCorrelation, id)
}

// WithCausation sets the causation ID of the events saved under ctx.
func WithCausation(ctx context.Context, id string) context.Context {
	return WithMetadata(ctx, MetaCausation, id)
}

// CausedBy returns a context for the work a handler does in reaction to
// ev: its events are caused by ev and share ev's correlation ID (ev's own
// ID when it has none, so that a chain starts at its first event).
func CausedBy(ctx context.Context, ev eventstore.Event) context.Context {
	corr := CorrelationID(ev)
	if corr == "" {
		corr = ev.ID.String()
	}
	return WithCausation(WithCorrelation(ctx, corr), ev.ID.String())
}

// MetadataFrom returns a copy of the metadata that a Save under ctx adds
// to its events.
func MetadataFrom(ctx context.Context) map[string]string { return maps.Clone(metadata(ctx)) }

func metadata(ctx context.Context) map[string]string {
	m, _ := ctx.Value(metaKey{}).(map[string]string)
	return m
}

// CorrelationID returns the correlation ID of a stored event, or "".
func CorrelationID(ev eventstore.Event) string { return ev.Metadata[MetaCorrelation] }

// CausationID returns the causation ID of a stored event, or "".
func CausationID(ev eventstore.Event) string { return ev.Metadata[MetaCausation] }
