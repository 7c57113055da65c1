package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
)

func newStore(t testing.TB, cfg eventstore.Config) *eventstore.Store {
	t.Helper()
	c := testenv.Redis(t)
	if cfg.Namespace == "" {
		cfg.Namespace = testenv.Namespace(t, c)
	}
	s, err := eventstore.New(c, cfg)
	require.NoError(t, err)
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func collect(t testing.TB, seq func(func(eventstore.Event, error) bool)) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	for ev, err := range seq {
		require.NoError(t, err)
		out = append(out, ev)
	}
	return out
}

func ev(typ, data string) eventstore.EventData {
	return eventstore.EventData{Type: typ, Data: []byte(data)}
}
