package aggregatetest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
)

// DefaultID is the aggregate ID a Scenario uses unless told otherwise.
const DefaultID = "aggregatetest-1"

// Scenario is one given/when/then test of an aggregate's decisions. Build
// it with For; Then or ThenError runs it.
type Scenario[A aggregate.Interface] struct {
	t     testing.TB
	cfg   aggregate.Config[A]
	id    string
	given []any
	when  func(A) error
}

// For starts a scenario for the aggregate that cfg describes: pass the
// same Config as to aggregate.NewRepository, so that the test sees the
// event types, codecs and upcasters that production uses.
func For[A aggregate.Interface](t testing.TB, cfg aggregate.Config[A]) *Scenario[A] {
	return &Scenario[A]{t: t, cfg: cfg, id: DefaultID}
}

// ID sets the aggregate's ID (default DefaultID).
func (s *Scenario[A]) ID(id string) *Scenario[A] { s.id = id; return s }

// Given sets the aggregate's past events, oldest first. Each goes through
// its codec before it is applied, as it would coming from Redis.
func (s *Scenario[A]) Given(events ...any) *Scenario[A] { s.given = events; return s }

// When sets the command: typically a call of one decision method.
func (s *Scenario[A]) When(decide func(A) error) *Scenario[A] { s.when = decide; return s }

// Then runs the scenario and checks that the command succeeded and recorded
// exactly these events, in order (none: it recorded nothing). It also
// checks that each recorded event is registered and comes back equal from
// its codec, which catches state a codec drops (unexported fields under
// JSON). It returns the aggregate for further checks, or the zero A when
// the scenario could not run.
func (s *Scenario[A]) Then(want ...any) A {
	s.t.Helper()
	a, err, ok := s.run()
	if !ok {
		return a
	}
	if err != nil {
		s.t.Errorf("aggregatetest: When returned error %v\nwant events:\n%s", err, list(want))
		return a
	}
	got := a.Changes()
	if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
		s.t.Errorf("aggregatetest: recorded events differ\ngot:\n%swant:\n%s", list(got), list(want))
	}
	s.checkCodec(got)
	return a
}

// ThenError runs the scenario and checks that the command failed with an
// error matching target (errors.Is) and recorded nothing: a refused command
// must leave no event behind.
func (s *Scenario[A]) ThenError(target error) A {
	s.t.Helper()
	a, err, ok := s.run()
	if !ok {
		return a
	}
	switch {
	case err == nil:
		s.t.Errorf("aggregatetest: When succeeded, want error %v\nrecorded:\n%s", target, list(a.Changes()))
	case !errors.Is(err, target):
		s.t.Errorf("aggregatetest: When returned error %v, want %v", err, target)
	case len(a.Changes()) > 0:
		s.t.Errorf("aggregatetest: When returned error %v but recorded events (record only once every rule has passed):\n%s", err, list(a.Changes()))
	}
	return a
}

func (s *Scenario[A]) run() (A, error, bool) {
	s.t.Helper()
	var zero A
	if s.when == nil {
		s.t.Errorf("aggregatetest: no When")
		return zero, nil, false
	}
	a, err := s.cfg.Build(s.id, s.given...)
	if err != nil {
		s.t.Errorf("aggregatetest: Given: %v", err)
		return zero, nil, false
	}
	return a, s.when(a), true
}

// checkCodec reports recorded events that do not survive storage.
func (s *Scenario[A]) checkCodec(events []any) {
	s.t.Helper()
	types, err := aggregate.NewRegistry(s.cfg.Events...)
	if err != nil {
		s.t.Errorf("aggregatetest: %v", err)
		return
	}
	for i, e := range events {
		ed, err := types.Encode(e)
		if err != nil {
			s.t.Errorf("aggregatetest: recorded event %d: %v", i, err)
			continue
		}
		back, err := types.Decode(eventstore.Event{
			Stream: eventstore.StreamID{Category: s.cfg.Category, ID: s.id},
			Type:   ed.Type, Data: ed.Data, Metadata: ed.Metadata,
		})
		if err != nil {
			s.t.Errorf("aggregatetest: recorded event %d: %v", i, err)
			continue
		}
		if !reflect.DeepEqual(back, e) {
			s.t.Errorf("aggregatetest: recorded event %d does not survive its codec (unexported fields are not stored by JSON)\nrecorded:  %#v\nread back: %#v", i, e, back)
		}
	}
}

func list(events []any) string {
	if len(events) == 0 {
		return "\t(none)\n"
	}
	var b strings.Builder
	for i, e := range events {
		fmt.Fprintf(&b, "\t%d: %T %+v\n", i, e, e)
	}
	return b.String()
}
