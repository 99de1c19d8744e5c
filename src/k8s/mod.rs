//! Pod attribution: cgroup -> container id -> pod (issue 5). Not yet built.
