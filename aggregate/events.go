package aggregate

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// Codec turns an event value into bytes and back.
type Codec interface {
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, a pointer to a zero value of the
	// registered Go type.
	Unmarshal(data []byte, v any) error
}

// JSONCodec is the default Codec: encoding/json. Only exported fields are
// stored; aggregatetest reports an event that does not survive the trip.
type JSONCodec struct{}

func (JSONCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Upcaster turns the data of one schema version of an event into the data
// of the next version, in the event's codec. It runs at read time; stored
// events are never rewritten.
type Upcaster func(data []byte) ([]byte, error)

// EventType describes one event type: its stored name, its Go type, its
// codec and schema history. Make one with Event.
type EventType struct {
	name   string
	typ    reflect.Type
	schema int
	codec  Codec
	up     map[int]Upcaster
	decode func(Codec, []byte) (any, error)
	err    error
}

// EventOption refines an EventType.
type EventOption func(*EventType)

// Event describes Go type E, stored under name. The events a repository
// records and the ones Apply receives are values of E exactly as
// registered: register Deposited and record Deposited{...}, not
// &Deposited{...}.
func Event[E any](name string, opts ...EventOption) EventType {
	t := EventType{
		name:   name,
		typ:    reflect.TypeFor[E](),
		schema: 1,
		codec:  JSONCodec{},
		decode: func(c Codec, data []byte) (any, error) {
			var e E
			if err := c.Unmarshal(data, &e); err != nil {
				return nil, err
			}
			return e, nil
		},
	}
	for _, o := range opts {
		o(&t)
	}
	return t
}

// SchemaVersion sets the current schema version of the event's data
// (default 1). Save stores it in the event's metadata under MetaSchema
// when it is above 1; an event without that key is version 1.
func SchemaVersion(v int) EventOption {
	return func(t *EventType) {
		if v < 1 {
			t.fail(fmt.Errorf("schema version %d, want >= 1", v))
		}
		t.schema = v
	}
}

// Upcast registers fn to turn the data of schema version from into the
// data of version from+1. An event stored at version v passes through the
// upcasters of v, v+1, …, current-1, in order.
func Upcast(from int, fn Upcaster) EventOption {
	return func(t *EventType) {
		switch {
		case from < 1:
			t.fail(fmt.Errorf("upcaster from schema version %d, want >= 1", from))
		case fn == nil:
			t.fail(fmt.Errorf("nil upcaster from schema version %d", from))
		case t.up[from] != nil:
			t.fail(fmt.Errorf("two upcasters from schema version %d", from))
		}
		if t.up == nil {
			t.up = map[int]Upcaster{}
		}
		t.up[from] = fn
	}
}

// WithCodec sets the event's codec (default JSONCodec).
func WithCodec(c Codec) EventOption {
	return func(t *EventType) {
		if c == nil {
			t.fail(fmt.Errorf("nil codec"))
		}
		t.codec = c
	}
}

func (t *EventType) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// Name returns the stored type name.
func (t EventType) Name() string { return t.name }

// Schema returns the current schema version.
func (t EventType) Schema() int { return t.schema }

func (t *EventType) validate() error {
	if t.typ == nil {
		return fmt.Errorf("aggregate: EventType not made by aggregate.Event")
	}
	if t.err != nil {
		return fmt.Errorf("aggregate: event type %q (%s): %w", t.name, t.typ, t.err)
	}
	if err := keys.Validate("event type", t.name, keys.MaxEventTypeLen); err != nil {
		return fmt.Errorf("aggregate: %s: %w", t.typ, err)
	}
	if t.typ.Kind() == reflect.Interface {
		return fmt.Errorf("aggregate: event type %q: %s is an interface; register a concrete type", t.name, t.typ)
	}
	// Every upcaster must lead to the current version without a gap.
	for from := range t.up {
		if from >= t.schema {
			return fmt.Errorf("aggregate: event type %q: upcaster from schema version %d, but the current version is %d", t.name, from, t.schema)
		}
		for v := from + 1; v < t.schema; v++ {
			if t.up[v] == nil {
				return fmt.Errorf("aggregate: event type %q: upcasters from version %d stop at %d: no upcaster from %d to %d", t.name, from, v, v, v+1)
			}
		}
	}
	return nil
}

// Registry maps Go event types to stored names and back, with their codecs
// and upcasters. A Repository builds one from Config.Events; build your own
// to decode the same events elsewhere (a projection handler, a tool). It is
// immutable and safe for concurrent use.
type Registry struct {
	byName map[string]*EventType
	byType map[reflect.Type]*EventType
	names  string // for error messages
}

// NewRegistry checks types (names valid and unique, Go types unique,
// upcaster chains complete) and returns their registry.
func NewRegistry(types ...EventType) (*Registry, error) {
	if len(types) == 0 {
		return nil, fmt.Errorf("aggregate: no event types")
	}
	r := &Registry{byName: map[string]*EventType{}, byType: map[reflect.Type]*EventType{}}
	for i := range types {
		t := &types[i]
		if err := t.validate(); err != nil {
			return nil, err
		}
		if o, dup := r.byName[t.name]; dup {
			return nil, fmt.Errorf("aggregate: event type name %q is used by both %s and %s", t.name, o.typ, t.typ)
		}
		if o, dup := r.byType[t.typ]; dup {
			return nil, fmt.Errorf("aggregate: Go type %s is registered twice, as %q and %q", t.typ, o.name, t.name)
		}
		r.byName[t.name], r.byType[t.typ] = t, t
	}
	r.names = strings.Join(slices.Sorted(maps.Keys(r.byName)), ", ")
	return r, nil
}

// Encode returns the stored form of event: its type name, its data in the
// type's codec and, for a schema version above 1, the MetaSchema metadata.
// The ID is left zero. A Go type that is not registered is an error
// matching ErrUnknownEventType.
func (r *Registry) Encode(event any) (eventstore.EventData, error) {
	if event == nil {
		return eventstore.EventData{}, fmt.Errorf("%w: nil event", ErrUnknownEventType)
	}
	rt := reflect.TypeOf(event)
	t, ok := r.byType[rt]
	if !ok {
		return eventstore.EventData{}, fmt.Errorf("%w: Go type %s is not registered%s (registered: %s)", ErrUnknownEventType, rt, r.hint(rt), r.names)
	}
	data, err := t.codec.Marshal(event)
	if err != nil {
		return eventstore.EventData{}, fmt.Errorf("aggregate: encode %s as %q: %w", rt, t.name, err)
	}
	ed := eventstore.EventData{Type: t.name, Data: data}
	if t.schema > 1 {
		ed.Metadata = map[string]string{MetaSchema: strconv.Itoa(t.schema)}
	}
	return ed, nil
}

// hint names the registered pointer or value form of rt, the usual slip.
func (r *Registry) hint(rt reflect.Type) string {
	if rt.Kind() == reflect.Pointer {
		if t, ok := r.byType[rt.Elem()]; ok {
			return fmt.Sprintf("; %s is, as %q: record the value, not a pointer", t.typ, t.name)
		}
	} else if t, ok := r.byType[reflect.PointerTo(rt)]; ok {
		return fmt.Sprintf("; %s is, as %q: record a pointer", t.typ, t.name)
	}
	return ""
}

// Decode returns ev as a value of its registered Go type, its data first
// brought to the current schema version by the type's upcasters. An
// unregistered type name matches ErrUnknownEventType, a schema version
// with no way to the current one ErrSchema; both name the stream, the
// version and the type.
func (r *Registry) Decode(ev eventstore.Event) (any, error) {
	t, ok := r.byName[ev.Type]
	if !ok {
		return nil, fmt.Errorf("%w %q in %s at version %d (registered: %s)", ErrUnknownEventType, ev.Type, ev.Stream, ev.Version, r.names)
	}
	where := func() string { return fmt.Sprintf("%s at version %d, type %q", ev.Stream, ev.Version, ev.Type) }
	schema := 1
	if s, ok := ev.Metadata[MetaSchema]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: %s: bad %q metadata %q", ErrSchema, where(), MetaSchema, s)
		}
		schema = n
	}
	data := ev.Data
	switch {
	case schema > t.schema:
		return nil, fmt.Errorf("%w: %s: stored at schema version %d, this build knows up to %d", ErrSchema, where(), schema, t.schema)
	case schema < t.schema:
		for v := schema; v < t.schema; v++ {
			up := t.up[v]
			if up == nil {
				return nil, fmt.Errorf("%w: %s: stored at schema version %d, no upcaster from %d to %d", ErrSchema, where(), schema, v, v+1)
			}
			var err error
			if data, err = up(data); err != nil {
				return nil, fmt.Errorf("aggregate: upcast %s from schema version %d: %w", where(), v, err)
			}
		}
	}
	e, err := t.decode(t.codec, data)
	if err != nil {
		return nil, fmt.Errorf("aggregate: decode %s: %w", where(), err)
	}
	return e, nil
}
