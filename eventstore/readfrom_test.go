package eventstore_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
)

func TestReadFromPosition(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{ReadBatch: 3})
	st := eventstore.StreamID{Category: "c", ID: "from"}
	var evs []eventstore.EventData
	for i := range 10 {
		evs = append(evs, ev("E", fmt.Sprint(i)))
	}
	res, err := s.Append(ctx, st, eventstore.NoStream, evs...)
	require.NoError(t, err)

	got := collect(t, s.ReadFrom(ctx, st, res.Positions[4], 5))
	require.Len(t, got, 6)
	for i, e := range got {
		require.Equal(t, uint64(5+i), e.Version)
		require.Equal(t, res.Positions[4+i], e.Position)
	}

	for name, tc := range map[string]struct {
		pos     eventstore.Position
		version uint64
	}{
		"wrong version":     {res.Positions[4], 6},
		"no event there":    {res.Positions[4].Next(), 5},
		"past the end":      {res.Positions[9].Next(), 11},
		"another aggregate": {eventstore.Position{Ms: 1, Seq: 0}, 1},
	} {
		var first error
		for _, err := range s.ReadFrom(ctx, st, tc.pos, tc.version) {
			first = err
			break
		}
		require.ErrorIs(t, first, eventstore.ErrPositionMismatch, name)
	}
}
