package keys

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPartitionIsStable(t *testing.T) {
	// These values are a contract: an aggregate never changes partition.
	// fnv1a32("acc-1") = 0xabe56eac.
	require.Equal(t, 4, Partition("acc-1", 8))
	require.Equal(t, 12, Partition("acc-1", 16))
	require.Equal(t, 5, Partition("acc-2", 8))
	require.Equal(t, 4, Partition("order-42", 8))
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name, value, reason string
	}{
		{"empty", "", "must not be empty"},
		{"brace", "a{b", `must not contain '{'`},
		{"close brace", "a}b", `must not contain '}'`},
		{"control", "a\x00b", "control"},
		{"space", "a b", "control or space"},
		{"utf8", "a\xffb", "UTF-8"},
		{"long", strings.Repeat("x", MaxCategoryLen+1), "the limit is 64"},
		{"colon", "a:b", `must not contain ':'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateCategory(tc.value)
			require.Error(t, err)
			var ne *NameError
			require.True(t, errors.As(err, &ne))
			require.Equal(t, "category", ne.Field)
			require.Contains(t, err.Error(), tc.reason)
		})
	}
	require.NoError(t, ValidateCategory("account"))
	require.NoError(t, ValidateAggregateID("acc:42/ü"))
}

func TestLayoutSharesHashTag(t *testing.T) {
	l := Layout{NS: "rs"}
	require.Equal(t, "rs:{account:3}:log", l.Log("account", 3))
	require.Equal(t, "rs:{account:3}:agg:a1", l.Aggregate("account", 3, "a1"))
	require.Equal(t, "rs:{account:3}:dlq:balances", l.DLQ("account", 3, "balances"))
	require.Equal(t, "rs:{account:3}:snap:a1", l.Snapshot("account", 3, "a1"))
	require.Equal(t, "rs:{account:3}:meta", l.PartitionMeta("account", 3))
	require.Equal(t, "rs:identity", l.Identity())
	require.Equal(t, "rs:categories", l.Categories())
}
