-- Reserved for the snapshot store (roadmap 2).
SELECT 1;
