# cuemu build-time rewrite of a CUDA source (sed -E). Changes nothing but
# syntax the host compiler cannot parse, one line at a time (line numbers are
# kept, and the build puts a #line directive naming the original file first):
#
#  1. Launches:  kernel<<<grid, block, smem, stream>>>(args)
#     becomes    ::cuemu::launch(kernel, "kernel", __FILE__, __LINE__, grid, block, smem, stream)(args)
#     (the kernel expression: a name, optionally qualified, optionally with
#     one level of template arguments).
#  2. Static shared memory:  __shared__ [__align__(N)] TYPE NAME[D1][D2]...;
#     becomes a reference to per-block storage (see cuemu::detail::shared_var).
#  3. Dynamic shared memory: extern __shared__ TYPE NAME[];
#     becomes TYPE* const NAME pointing at the launch's dynamic shared memory.
#
# A form this does not recognize is left alone and then fails to compile
# (__shared__ is defined to an error-naming identifier in cuemu/device.h).

s/([A-Za-z_][A-Za-z_0-9:]*(<[^<>;]*>)?)[[:space:]]*<<</::cuemu::launch(\1, "\1", __FILE__, __LINE__, /g
s/>>>[[:space:]]*\(/)(/g

s/(^|[;{}[:space:]])extern[[:space:]]+__shared__[[:space:]]+(__align__\([0-9]+\)[[:space:]]+)?(.*[^[:space:]])[[:space:]]+([A-Za-z_][A-Za-z_0-9]*)[[:space:]]*\[[[:space:]]*\][[:space:]]*;/\1\3* const \4 = static_cast<\3*>(::cuemu::detail::dynamic_shared());/

s/__shared__[[:space:]]+(__align__\(([0-9]+)\)[[:space:]]+)?(.*[^[:space:]])[[:space:]]+([A-Za-z_][A-Za-z_0-9]*)[[:space:]]*((\[[^];]*\])*)[[:space:]]*;/using cuemu_shared_t_\4 = \3\5; static_assert(std::is_trivially_default_constructible<cuemu_shared_t_\4>::value, "__shared__ \4: no constructors in shared memory"); static char cuemu_shared_k_\4; cuemu_shared_t_\4\& \4 = *static_cast<cuemu_shared_t_\4*>(::cuemu::detail::shared_var(\&cuemu_shared_k_\4, sizeof(cuemu_shared_t_\4), alignof(cuemu_shared_t_\4) > (\2+0) ? alignof(cuemu_shared_t_\4) : (\2+0), "\4"));/
