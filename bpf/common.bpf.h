/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Definitions the exporter's BPF programs share. Include after vmlinux.h and
 * <bpf/bpf_helpers.h>. */
#ifndef BPFMAP_COMMON_BPF_H
#define BPFMAP_COMMON_BPF_H

/* Map files are anonymous-inode files named "bpf-map"
 * (bpf_map_new_fd -> anon_inode_getfd("bpf-map", &bpf_map_fops, ...)).
 * Matching on the anon inode superblock magic plus the dentry name needs no
 * kallsyms: bpf_map_fops is a data symbol, absent without CONFIG_KALLSYMS_ALL. */
#define ANON_INODE_FS_MAGIC 0x09041934

/* File type bits of inode->i_mode (include/uapi/linux/stat.h). */
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* Whether the dentry name at dname is "bpf-map" (the name of every map file;
 * callers check the anon inode magic first). */
static __always_inline int is_bpf_map_name(const unsigned char *dname)
{
	char name[8] = {};

	if (bpf_probe_read_kernel_str(name, sizeof(name), dname) != 8)
		return 0;
	return name[0] == 'b' && name[1] == 'p' && name[2] == 'f' && name[3] == '-' &&
	       name[4] == 'm' && name[5] == 'a' && name[6] == 'p';
}

#endif /* BPFMAP_COMMON_BPF_H */
